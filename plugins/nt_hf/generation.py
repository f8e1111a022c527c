"""Batched chat generation with transformers, shared by the `hf` teacher and the `system1` annotator.

Rows are left-padded so every row's new tokens start at the same position. Sampling settings are always
passed in full and the checkpoint's own generation_config.json is set aside, so a hub model's
defaults (top_k 50, a repetition penalty, a short max_length) never leak into a run.

What makes it fast on a CPU (measured, benchmarks/embedded_generation.py): bf16 where the CPU computes it
natively (3x fp32 on 2 AVX512-BF16 cores); several samples of one prompt share its prefill (transformers'
documented prompt-cache reuse: the KV cache of the prompt is computed once and repeated per sample); rows
stop at a stop string (e.g. ``</answer>``) as well as at end-of-sequence, so a batch ends when its last
row has answered, not at the token cap.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from nt_harness.models import cpu_dtype

# torch and transformers are imported when a model is loaded, so listing plugins stays fast


@dataclass(frozen=True)
class Sampling:
    """temperature 0 means greedy; top_k 0 means no top-k cut."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0


@dataclass
class Completion:
    token_ids: list[int]  # the new tokens, without the end-of-sequence token (a stop string's are kept)
    stopped: bool  # the model wrote end-of-sequence or a stop string; False when max_new_tokens cut it off
    at_stop_string: bool = False  # it ended with a stop string


def batch_seed(seed: int, batch_index: int) -> int:
    """A seed per batch, so batch i samples the same tokens whether or not batches before it ran now."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{batch_index}".encode()).digest()[:8], "little") >> 1


def load_tokenizer(folder: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def chat_prompt(tokenizer, user: str, system: str | None = None, prefill: str = "") -> list[int]:
    """Token ids of the chat-templated conversation, ending with the assistant turn's opening text."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text + prefill, add_special_tokens=False)["input_ids"]


class ChatModel:
    """A causal LM and its tokenizer, on the GPU when there is one, else the CPU.

    dtype "auto": on the CPU bf16 where it is native (``cpu_dtype``), else fp32; on the GPU the checkpoint's own
    dtype. (Measured on an H100 with a SmolLM2-135M-shaped model: generate is launch-bound there and fp32 ran
    2-3x faster than bf16, so a small fp32 checkpoint stays fp32; large checkpoints ship in bf16 and stay bf16.)
    """

    def __init__(self, folder: str, threads: int = 2, dtype: str = "auto"):
        import torch
        from transformers import AutoModelForCausalLM, GenerationConfig

        torch.set_num_threads(threads)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if dtype == "auto" and self.device.type == "cpu":
            dtype = cpu_dtype()
        self.tokenizer = load_tokenizer(folder)
        torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype).to(self.device).eval()
        eos = self.model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        self.eos_ids = sorted(i for i in eos if i is not None)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.eos_ids[0]
        # keep only what says when to stop; everything about sampling is passed per call
        self.model.generation_config = GenerationConfig(eos_token_id=self.eos_ids, pad_token_id=self.pad_id)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def chat_prompt(self, user: str, system: str | None = None, prefill: str = "") -> list[int]:
        return chat_prompt(self.tokenizer, user, system, prefill)

    def complete(
        self, prompts: list[list[int]], max_new_tokens: int, sampling: Sampling, seed: int, samples: int = 1,
        stop: tuple[str, ...] = (),
    ) -> list[Completion]:
        """Continue each prompt (token ids) ``samples`` times in one left-padded batch; completions come
        prompt by prompt, each prompt's samples together. A row ends at end-of-sequence or right after a stop
        string."""
        import torch
        from transformers import DynamicCache, GenerationConfig, LogitsProcessorList

        from nt_hf.sampling import NucleusSampler

        if not prompts:
            return []
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompts], device=self.device)
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        greedy = sampling.temperature <= 0
        # sampling draws in NucleusSampler, after which generate's greedy argmax keeps the drawn token
        processors = LogitsProcessorList(
            [] if greedy else [NucleusSampler(sampling.temperature, sampling.top_p, sampling.top_k, seed)])
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            repetition_penalty=1.0,
            num_beams=1,
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
            stop_strings=list(stop) or None,
        )
        cache = None
        with torch.inference_mode():
            if samples > 1 and width > 1:
                # the prompt's cache once, repeated per sample; generate then reads only the prompt's last token
                cache = DynamicCache(config=self.model.config)
                positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
                self.model(input_ids=input_ids[:, :-1], attention_mask=attention_mask[:, :-1],
                           position_ids=positions[:, :-1], cache=cache, use_cache=True, logits_to_keep=1)
                cache.batch_repeat_interleave(samples)
            input_ids = input_ids.repeat_interleave(samples, 0)
            attention_mask = attention_mask.repeat_interleave(samples, 0)
            out = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                                      logits_processor=processors, tokenizer=self.tokenizer if stop else None,
                                      **({"cache": cache} if cache is not None else {}))
        return [self._completion(row, stop) for row in out[:, width:].tolist()]

    def _completion(self, row: list[int], stop: tuple[str, ...]) -> Completion:
        """The row up to its end-of-sequence (or pad, which a finished row is filled with), or through the
        first stop string it wrote."""
        end = next((i for i, t in enumerate(row) if t in self.eos_ids or t == self.pad_id), None)
        tokens = row if end is None else row[:end]
        if stop:
            text = ""
            for i, token in enumerate(tokens):
                text += self.tokenizer.decode([token], skip_special_tokens=False)
                if any(s in text for s in stop):
                    return Completion(tokens[:i + 1], True, True)
        return Completion(tokens, end is not None)
