"""Batched chat generation with transformers, shared by the `hf` teacher and the `system1` annotator.

Rows are left-padded so every row's new tokens start at the same position. Sampling settings are always
passed in full and the checkpoint's own generation_config.json is set aside, so a hub model's
defaults (top_k 50, a repetition penalty, a short max_length) never leak into a run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

# torch and transformers are imported when a model is loaded, so listing plugins stays fast


@dataclass(frozen=True)
class Sampling:
    """temperature 0 means greedy; top_k 0 means no top-k cut."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0


@dataclass
class Completion:
    token_ids: list[int]  # the new tokens, without the end-of-sequence token
    stopped: bool  # the model wrote end-of-sequence; False when max_new_tokens cut it off


def batch_seed(seed: int, batch_index: int) -> int:
    """A seed per batch, so batch i samples the same tokens whether or not batches before it ran now."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{batch_index}".encode()).digest()[:8], "little") >> 1


class ChatModel:
    """A causal LM and its tokenizer, on the GPU when there is one, else the CPU.

    dtype "auto": fp32 on the CPU; on the GPU the checkpoint's own dtype. (Measured on an H100 with a
    SmolLM2-135M-shaped model: generate is launch-bound there and fp32 ran 2-3x faster than bf16, so
    a small fp32 checkpoint stays fp32; large checkpoints ship in bf16 and stay bf16.)
    """

    def __init__(self, folder: str, threads: int = 2, dtype: str = "auto"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        torch.set_num_threads(threads)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if dtype == "auto" and self.device.type == "cpu":
            dtype = "float32"
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
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
        """Token ids of the chat-templated conversation, ending with the assistant turn's opening text."""
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.encode(text + prefill)

    def complete(
        self, prompts: list[list[int]], max_new_tokens: int, sampling: Sampling, seed: int
    ) -> list[Completion]:
        """Continue each prompt (token ids) in one left-padded batch."""
        import torch
        from transformers import GenerationConfig

        if not prompts:
            return []
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompts], device=self.device)
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        greedy = sampling.temperature <= 0
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=not greedy,
            temperature=None if greedy else sampling.temperature,
            top_p=None if greedy else sampling.top_p,
            top_k=None if greedy else sampling.top_k,
            repetition_penalty=1.0,
            num_beams=1,
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
        )
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
        completions = []
        for row in out[:, width:].tolist():
            end = next((i for i, t in enumerate(row) if t in self.eos_ids), None)
            completions.append(Completion(row if end is None else row[:end], end is not None))
        return completions
