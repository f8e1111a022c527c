"""Supervised fine-tuning of a student on chosen traces, with Hugging Face Accelerate.

One file, read top to bottom: render each example with the student's own chat template, train on the
assistant turn only (end-of-turn token included, so the student learns to stop), normalise the loss by
the target tokens of the whole gradient-accumulation window, checkpoint into ``ctx.scratch`` so a killed
run resumes, and write a folder that lm-eval's ``hf`` backend and vLLM load.

The defaults follow NaturalThoughts (Li et al., 2025, §4 "Experimental setup"): AdamW with weight decay
0.1 and a constant learning rate of 2e-5. Only complete responses are trained on, so an example longer
than ``max_length`` is dropped and counted, never truncated.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from pathlib import Path
from typing import Literal

import pyarrow as pa
import torch
import torch.nn.functional as F

from nt_harness.components import Context, Settings, Trainer

IGNORE = -100  # label of a token the loss skips (PyTorch's cross_entropy ignore_index default)


class SFTTrainer(Trainer):
    name = "sft"
    version = "1"
    description = "supervised fine-tuning (full or LoRA) on Accelerate; loss on the assistant turn only"

    class Settings(Settings):
        # NaturalThoughts §4: AdamW, weight decay 0.1, constant learning rate 2e-5.
        lr: float = 2e-5
        epochs: int = 2
        batch_size: int = 4
        grad_accum: int = 1
        max_length: int = 1024  # longer examples are dropped (counted), never truncated
        weight_decay: float = 0.1
        adam_beta2: float = 0.999
        max_grad_norm: float = 1.0  # 0 turns clipping off
        schedule: Literal["constant", "cosine", "cosine_min"] = "constant"
        min_lr_ratio: float = 0.1  # floor of "cosine_min", as a fraction of lr
        warmup_ratio: float = 0.0
        lora: bool = False
        lora_r: int = 16
        lora_alpha: int = 32
        lora_dropout: float = 0.0
        lora_targets: str | list[str] = "all-linear"
        gradient_checkpointing: bool = False
        mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 autocast, fp32 weights
        seed: int = 0
        save_every_steps: int = 0  # 0: no intermediate checkpoints, the model is written at the end
        system_prompt: str | None = None

    def train(self, examples: pa.Table, student: str, ctx: Context) -> dict:
        return train(examples, student, ctx, self.settings)


# ---------------------------------------------------------------------------------------------------
# Data: chat rendering, assistant-only labels, padding.


def assistant_turn(thinking: str, answer: str, mode: str) -> str:
    """The project-wide rendering of a System-2 (reasoning) or System-1 (answer only) response."""
    if mode == "system2":
        return f"<think>\n{thinking}\n</think>\n{answer}"
    if mode == "system1":
        return answer
    raise ValueError(f"example mode must be 'system2' or 'system1', got {mode!r}")


def stop_token_ids(tokenizer, student: str) -> set[int]:
    """Tokens that end generation: the tokenizer's EOS plus the generation config's (e.g. <|eot_id|>)."""
    from transformers import GenerationConfig

    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    try:
        eos = GenerationConfig.from_pretrained(student).eos_token_id
    except OSError:  # no generation_config.json
        eos = None
    ids |= set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    return ids


def encode_example(tokenizer, question: str, response: str, system_prompt: str | None, stops: set[int]) -> dict:
    """Token ids and labels; the prompt (everything up to the assistant's first token) is masked.

    Prompt and response are tokenized separately and concatenated: that is exactly what the student sees
    at inference, where the prompt is tokenized alone and the response is generated after it.
    """
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": question}
    ]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": response}], tokenize=False)
    if not full.startswith(prompt):
        raise ValueError(
            "the chat template's rendering with add_generation_prompt=True is not a prefix of the rendering "
            "with the assistant turn, so the assistant span cannot be found; prompt ends "
            f"{prompt[-80:]!r}, full rendering has {full[len(prompt) - 80:len(prompt) + 20]!r} there"
        )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
    if stops and not stops.intersection(response_ids):  # a template that does not close the turn with EOS
        response_ids = response_ids + [tokenizer.eos_token_id]
    return {"input_ids": prompt_ids + response_ids, "labels": [IGNORE] * len(prompt_ids) + response_ids}


def encode_examples(tokenizer, examples: pa.Table, settings, stops: set[int]) -> tuple[list[dict], int]:
    """Encode every example; return those within ``max_length`` and how many were dropped."""
    kept, dropped = [], 0
    for row in examples.select(["question", "thinking", "answer", "mode"]).to_pylist():
        response = assistant_turn(row["thinking"] or "", row["answer"] or "", row["mode"])
        enc = encode_example(tokenizer, row["question"], response, settings.system_prompt, stops)
        if len(enc["input_ids"]) > settings.max_length:
            dropped += 1
        else:
            kept.append(enc)
    return kept, dropped


def pad_batch(features: list[dict], pad_id: int) -> dict:
    """Right-pad to the longest example of the batch; padding is masked out of attention and loss."""
    width = max(len(f["input_ids"]) for f in features)
    input_ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    labels = torch.full((len(features), width), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((len(features), width), dtype=torch.long)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        input_ids[i, :n] = torch.tensor(f["input_ids"])
        labels[i, :n] = torch.tensor(f["labels"])
        attention_mask[i, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class EpochShuffle(torch.utils.data.Sampler):
    """A permutation seeded by (seed, epoch): the same order on every run, and again after a resume."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:  # Accelerate's data loader calls this
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self):
        return self.size


# ---------------------------------------------------------------------------------------------------
# Model, optimizer, schedule.


def load_student(student: str, settings):
    """fp32 master weights (pure bf16 weights lose AdamW updates at lr 2e-5); LoRA adapters on top if asked."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(student, dtype=torch.float32)
    model.config.use_cache = False
    if settings.gradient_checkpointing:  # newer transformers renamed gradient_checkpointing_enable
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if settings.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=settings.lora_r,
                lora_alpha=settings.lora_alpha,
                lora_dropout=settings.lora_dropout,
                target_modules=settings.lora_targets,
                task_type="CAUSAL_LM",
            ),
        )
    return model


def build_optimizer(model, settings, fused: bool) -> torch.optim.AdamW:
    """AdamW; as in the HF Trainer, biases and norm weights (1-D tensors) get no weight decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": settings.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=settings.lr, betas=(0.9, settings.adam_beta2), fused=fused)


def build_schedule(optimizer, settings, total_steps: int):
    from transformers import get_cosine_with_min_lr_schedule_with_warmup, get_scheduler

    warmup = round(settings.warmup_ratio * total_steps)
    if settings.schedule == "cosine_min":
        return get_cosine_with_min_lr_schedule_with_warmup(
            optimizer, warmup, total_steps, min_lr_rate=settings.min_lr_ratio
        )
    name = "constant_with_warmup" if settings.schedule == "constant" else settings.schedule
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


# ---------------------------------------------------------------------------------------------------
# One optimizer step's worth of gradient.


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy over target tokens (fp32: bf16 log-softmax is too coarse)."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE,
                           reduction="sum")


def count_targets(batch: dict) -> torch.Tensor:
    """Tokens that carry a loss: the first label has no prediction before it."""
    return (batch["labels"][:, 1:] != IGNORE).sum()


def backward_window(accelerator, model, batches: list[dict]) -> tuple[float, int]:
    """Accumulate the gradient of (sum of token losses) / (target tokens in the whole window, all processes).

    Accelerate's recipe for variable-size samples (docs: usage_guides/gradient_accumulation.md, "Gradient
    accumulation on training samples of variable size"): a mean of per-batch means would weigh a short
    batch's tokens more than a long batch's. The Accelerator here is built with gradient_accumulation_steps=1
    (this loop forms the window itself), so ``backward`` does not rescale; DDP averages gradients over
    processes, hence the factor num_processes. Returns the window's mean token loss and its token count.
    """
    local_targets = sum(count_targets(b) for b in batches)
    window_targets = accelerator.gather(local_targets.reshape(1).to(accelerator.device)).sum()
    loss_sum = torch.zeros((), device=accelerator.device)
    for i, batch in enumerate(batches):
        last = i == len(batches) - 1
        # no gradient all-reduce before the window's last micro-batch
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss = token_loss_sum(logits, batch["labels"])
            accelerator.backward(loss * accelerator.num_processes / window_targets.clamp(min=1))
        loss_sum += loss.detach()
    total = accelerator.reduce(loss_sum, reduction="sum")
    return (total / window_targets.clamp(min=1)).item(), int(window_targets.item())


class TrainProgress:
    """What the loop has done; saved with every checkpoint so a resumed run reports the whole run."""

    def __init__(self):
        self.step, self.train_tokens, self.losses = 0, 0, []

    def state_dict(self) -> dict:
        return {"step": self.step, "train_tokens": self.train_tokens, "losses": list(self.losses)}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.train_tokens, self.losses = state["step"], state["train_tokens"], list(state["losses"])


# ---------------------------------------------------------------------------------------------------
# The loop.


def make_accelerator(mixed_precision: str):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    if mixed_precision == "auto":  # bf16 autocast over fp32 master weights, on CPU and on GPUs that have it
        mixed_precision = "bf16" if not torch.cuda.is_available() or torch.cuda.is_bf16_supported() else "no"
    # Accelerate's state is a process-wide singleton; one process may train several recipes with
    # different precisions (the process group, PartialState, is kept).
    AcceleratorState._reset_state()
    GradientState._reset_state()
    return Accelerator(mixed_precision=mixed_precision, step_scheduler_with_optimizer=False)


def train(examples: pa.Table, student: str, ctx: Context, settings) -> dict:
    from accelerate.utils import set_seed
    from transformers import AutoConfig, AutoTokenizer

    from nt_harness.progress import Progress

    torch.set_num_threads(ctx.threads)
    set_seed(settings.seed)
    accelerator = make_accelerator(settings.mixed_precision)

    tokenizer = AutoTokenizer.from_pretrained(student)
    if not tokenizer.chat_template:
        raise ValueError(f"student {student} has no chat template; the trainer renders examples with it")
    encoded, dropped = encode_examples(tokenizer, examples, settings, stop_token_ids(tokenizer, student))
    if not encoded:
        raise ValueError(f"all {examples.num_rows} examples are longer than max_length={settings.max_length}")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    loader = torch.utils.data.DataLoader(
        encoded,
        batch_size=settings.batch_size,
        sampler=EpochShuffle(len(encoded), settings.seed),
        collate_fn=lambda features: pad_batch(features, pad_id),
    )

    save_dtype = AutoConfig.from_pretrained(student).dtype or torch.float32  # the student's own dtype
    save_dtype = getattr(torch, save_dtype) if isinstance(save_dtype, str) else save_dtype
    model = load_student(student, settings)
    loader = accelerator.prepare_data_loader(loader)
    steps_per_epoch = math.ceil(len(loader) / settings.grad_accum)
    total_steps = steps_per_epoch * settings.epochs
    optimizer = build_optimizer(model, settings, fused=accelerator.device.type == "cuda")
    schedule = build_schedule(optimizer, settings, total_steps)
    model, optimizer, schedule = accelerator.prepare(model, optimizer, schedule)
    model.train()

    done = TrainProgress()
    accelerator.register_for_checkpointing(done)
    checkpoint = Path(ctx.scratch) / "checkpoint"
    if checkpoint.exists():
        accelerator.load_state(str(checkpoint))
    resumed_from = done.step

    progress = ctx.progress or Progress(disable=True)
    seen_tokens, train_seconds = 0, 0.0
    with progress.task(f"sft {Path(student).name}", total=total_steps) as advance:
        advance(done.step)
        for epoch in range(done.step // steps_per_epoch, settings.epochs):
            loader.set_epoch(epoch)  # before skipping: the skipping loader shares this sampler
            skip = (done.step - epoch * steps_per_epoch) * settings.grad_accum
            batches = iter(accelerator.skip_first_batches(loader, skip) if skip else loader)
            for _ in range(done.step - epoch * steps_per_epoch, steps_per_epoch):
                window = [b for _, b in zip(range(settings.grad_accum), batches)]
                started = time.perf_counter()
                loss, targets = backward_window(accelerator, model, window)
                if settings.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                train_seconds += time.perf_counter() - started
                seen_tokens += int(accelerator.gather(
                    sum(b["attention_mask"].sum() for b in window).reshape(1)).sum().item())
                done.step += 1
                done.train_tokens += targets
                done.losses.append(loss)
                if settings.save_every_steps and done.step % settings.save_every_steps == 0 \
                        and done.step < total_steps:
                    save_checkpoint(accelerator, checkpoint)
                advance(1, info=f"loss {loss:.3f} · {seen_tokens / train_seconds:,.0f} tok/s")

    out = Path(ctx.out)
    save_model(accelerator, model, tokenizer, settings.lora, save_dtype, out)
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else str(tokenizer.chat_template)
    return {
        "examples": len(encoded),
        "dropped_too_long": dropped,
        "train_tokens": done.train_tokens,
        "steps": done.step,
        "resumed_from_step": resumed_from,
        "final_loss": done.losses[-1],
        "loss_curve": done.losses,
        # all non-padding tokens pushed through the model per second of optimizer steps (this process's run)
        "tokens_per_s": round(seen_tokens / train_seconds, 1) if train_seconds else None,
        "provenance": {"chat_template_sha": hashlib.sha256(template.encode()).hexdigest()},
    }


def save_checkpoint(accelerator, checkpoint: Path) -> None:
    """Write the state beside the old one and swap, so a kill mid-write leaves the previous state whole."""
    import shutil

    tmp = checkpoint.with_name(checkpoint.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(checkpoint, ignore_errors=True)
        tmp.rename(checkpoint)
    accelerator.wait_for_everyone()


def save_model(accelerator, model, tokenizer, lora: bool, dtype, out: Path) -> None:
    """``out/model``: a plain Hugging Face folder (safetensors, config, tokenizer with chat template) in
    the student's own dtype; with LoRA also ``out/adapter``, and ``model`` holds the merged weights."""
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    model = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    if lora:
        model.save_pretrained(out / "adapter")
        tokenizer.save_pretrained(out / "adapter")
        model = model.merge_and_unload()
    model.config.use_cache = True
    model.to(dtype).save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
