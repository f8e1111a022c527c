"""What one optimizer step of the `sft` trainer does: batching (padded or packed), the token-normalised
loss, the backward pass over an accumulation window, the optimizer and its schedule.

Only torch, transformers and Accelerate are imported here (no nt-harness, no pyarrow), so that
``benchmarks/gpu_mfu.py`` runs exactly these functions on a bare GPU box.
"""

from __future__ import annotations

import bisect
import contextlib

import torch
import torch.nn.functional as F

IGNORE = -100  # label of a token the loss skips (PyTorch's cross_entropy ignore_index default)


# ---------------------------------------------------------------------------------------------------
# Batches. A padded batch carries an attention mask; a packed batch carries position ids that restart at
# every example and no attention mask, which is how transformers (masking_utils.find_packed_sequence_indices)
# recognises packing and builds a block-diagonal causal mask (sdpa, eager), or calls flash-attention's
# variable-length kernel (flash_attention_2/3, one row only). Both carry ``real_tokens``: the non-padding count.


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
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
            "real_tokens": attention_mask.sum()}


def pack_examples(lengths: list[int], capacity: int) -> list[list[int]]:
    """Best-fit decreasing bin packing: indices of the examples in each pack, no pack over ``capacity``.

    Deterministic (ties keep input order), and within ~11/9 of the fewest possible packs (Johnson, 1973).
    Each example goes whole into one pack: a trace is never split across sequences.
    """
    if any(n > capacity for n in lengths):
        raise ValueError(f"an example of {max(lengths)} tokens does not fit a pack of {capacity}")
    packs: list[list[int]] = []
    room: list[tuple[int, int]] = []  # (free tokens, pack index), sorted
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        at = bisect.bisect_left(room, (lengths[i], -1))  # the fullest pack that still has room
        if at == len(room):
            packs.append([i])
            free, pack = capacity - lengths[i], len(packs) - 1
        else:
            free, pack = room.pop(at)
            packs[pack].append(i)
            free -= lengths[i]
        if free > 0:
            bisect.insort(room, (free, pack))
    return packs


def pack_batch(packs: list[list[dict]], pad_id: int, one_row: bool = False) -> dict:
    """Concatenate each pack's examples into one row, positions restarting at 0 for every example.

    Rows are right-padded to the longest; the padding is a sequence of its own (positions 0..k), so it
    attends only to itself and carries no loss. ``one_row`` lays all packs end to end in a single row,
    as flash-attention's variable-length path requires (transformers uses it for batch size 1 only).
    The first label of every example is masked: it would otherwise be predicted from the previous example.
    """
    rows = []
    for pack in packs:
        ids, labels, positions = [], [], []
        for f in pack:
            ids += f["input_ids"]
            labels += [IGNORE] + list(f["labels"][1:])
            positions += range(len(f["input_ids"]))
        rows.append((ids, labels, positions))
    if one_row:
        rows = [tuple(sum((list(r[k]) for r in rows), []) for k in range(3))]
    width = max(len(r[0]) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, lab, pos) in enumerate(rows):
        n = len(ids)
        input_ids[i, :n] = torch.tensor(ids)
        labels[i, :n] = torch.tensor(lab)
        position_ids[i, :n] = torch.tensor(pos)
        position_ids[i, n:] = torch.arange(width - n)
    real = sum(len(r[0]) for r in rows)
    return {"input_ids": input_ids, "position_ids": position_ids, "labels": labels, "real_tokens": torch.tensor(real)}


def model_inputs(batch: dict) -> dict:
    """What the model is called with: a packed batch without an attention mask and without a KV cache.

    transformers looks for packing only when there is no cache: with ``use_cache`` on (a config's default)
    a packed row silently gets a plain causal mask and its examples attend to each other (measured:
    transformers 5.24, Llama, sdpa and eager). So the packed call turns the cache off itself.
    """
    if "position_ids" in batch:
        return {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


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
# Optimizer, schedule, accelerator.


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
            logits = model(**model_inputs(batch)).logits
            loss = token_loss_sum(logits, batch["labels"])
            accelerator.backward(loss * accelerator.num_processes / window_targets.clamp(min=1))
        loss_sum += loss.detach()
    total = accelerator.reduce(loss_sum, reduction="sum")
    return (total / window_targets.clamp(min=1)).item(), int(window_targets.item())


def optimizer_step(accelerator, model, optimizer, schedule, window: list[dict], max_grad_norm: float) -> dict:
    """One update from a window of micro-batches; returns its mean token loss and token counts (all processes)."""
    loss, targets = backward_window(accelerator, model, window)
    if max_grad_norm > 0:
        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)
    counts = torch.tensor([sum(int(b["real_tokens"]) for b in window), sum(b["input_ids"].numel() for b in window)],
                          device=accelerator.device)
    real, computed = accelerator.reduce(counts, reduction="sum").tolist()
    return {"loss": loss, "targets": targets, "real_tokens": int(real), "computed_tokens": int(computed)}
