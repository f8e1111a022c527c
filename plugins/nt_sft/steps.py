"""What one optimizer step of the `sft` trainer does: batching (padded or packed), the token-normalised
loss, the backward pass over an accumulation window, the optimizer and its schedule.

Only torch, transformers and Accelerate are imported here (no nt-harness, no pyarrow), so that
``benchmarks/gpu_mfu.py`` runs exactly these functions on a bare GPU box.
"""

from __future__ import annotations

import bisect
import contextlib
import math
from typing import NamedTuple

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
            "real_tokens": int(attention_mask.sum()), **loss_positions(labels)}


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


class Layout(NamedTuple):
    """One shape for every batch of a run, so that a compiled step is traced once and a CUDA graph replays
    (``pack_batch``): ``packs`` packs of ``tokens`` tokens each, every pack at most ``sequences`` sequences
    (its examples, then its padding)."""

    packs: int
    tokens: int
    sequences: int

    @classmethod
    def of(cls, packs: list[list], per_batch: int, tokens: int) -> Layout:
        return cls(per_batch, tokens, max(len(p) for p in packs) + 1)


def pack_batch(packs: list[list[dict]], pad_id: int, one_row: bool = False, varlen: bool = False,
               layout: Layout | None = None) -> dict:
    """Concatenate each pack's examples into one row, positions restarting at 0 for every example.

    Rows are right-padded to the longest; the padding is a sequence of its own (positions 0..k), so it
    attends only to itself and carries no loss. ``one_row`` lays all packs end to end in a single row,
    as flash-attention's variable-length path requires (transformers uses it for batch size 1 only).
    The first label of every example is masked: it would otherwise be predicted from the previous example.
    ``varlen`` adds the sequence boundaries the variable-length kernels take (transformers' FlashAttentionKwargs
    ``cu_seq_lens_q/k``, ``max_length_q/k``), computed here on the CPU: derived from the position ids on the
    GPU they would cost a device-to-host sync (TRL's padding-free collator does the same).
    ``layout`` gives every batch the same shapes: each pack padded to ``layout.tokens``, all-padding packs up to
    ``layout.packs``, the boundaries topped up with empty sequences at the end (flash-attention's varlen kernels
    skip them), the longest sequence taken as the pack length, and the LM head computed at every position.
    """
    rows = []
    for pack in packs:
        ids, labels, positions = [], [], []
        for f in pack:
            ids += f["input_ids"]
            labels += [IGNORE] + list(f["labels"][1:])
            positions += range(len(f["input_ids"]))
        if layout:
            pad = layout.tokens - len(ids)
            if pad < 0 or len(packs) > layout.packs:
                raise ValueError(f"{len(packs)} packs, one of {len(ids)} tokens, do not fit the layout {layout}")
            ids, labels, positions = ids + [pad_id] * pad, labels + [IGNORE] * pad, [*positions, *range(pad)]
        rows.append((ids, labels, positions))
    if layout:
        empty = ([pad_id] * layout.tokens, [IGNORE] * layout.tokens, range(layout.tokens))
        rows += [empty] * (layout.packs - len(rows))
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
    real = sum(len(f["input_ids"]) for pack in packs for f in pack)
    batch = {"input_ids": input_ids, "position_ids": position_ids, "labels": labels, "real_tokens": real,
             **loss_positions(labels, every_position=layout is not None)}
    if varlen:  # every row (and its padding) is a run of sequences; the kernels see the rows end to end
        starts = (position_ids.flatten() == 0).nonzero().flatten()
        cu = torch.cat([starts, torch.tensor([position_ids.numel()])]).to(torch.int32)
        if layout:
            cu = torch.cat([cu, cu[-1:].expand(layout.packs * layout.sequences + 1 - len(cu))])
        batch["cu_seq_lens_q"] = batch["cu_seq_lens_k"] = cu
        batch["max_length_q"] = batch["max_length_k"] = layout.tokens if layout else int(cu.diff().max())
    return batch


def model_inputs(batch: dict) -> dict:
    """What the model is called with: a packed batch without an attention mask and without a KV cache.

    transformers looks for packing only when there is no cache: with ``use_cache`` on (a config's default)
    a packed row silently gets a plain causal mask and its examples attend to each other (measured:
    transformers 5.24, Llama, sdpa and eager). So the packed call turns the cache off itself.
    """
    if "position_ids" in batch:
        return {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False,
                **{k: batch[k] for k in VARLEN_KEYS if k in batch}}
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


VARLEN_KEYS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")


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
    """AdamW; as in the HF Trainer, biases and norm weights (1-D tensors) get no weight decay.

    A parameter loaded under DeepSpeed ZeRO-3 (``zero3_init_flag``) is an empty 1-D partition whose real shape
    is ``ds_shape``: read by ``p.ndim`` every weight would lose its decay, and DeepSpeed would drop the empty group.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    matrix = [len(getattr(p, "ds_shape", p.shape)) >= 2 for p in params]
    groups = [
        {"params": [p for p, m in zip(params, matrix) if m], "weight_decay": settings.weight_decay},
        {"params": [p for p, m in zip(params, matrix) if not m], "weight_decay": 0.0},
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


def make_accelerator(mixed_precision: str, compile_mode: str | None = None, static_shapes: bool = False,
                     log_with: list[str] | None = None, project_dir: str | None = None):
    """``log_with``: Accelerate's trackers, writing under ``project_dir`` where they write files (TensorBoard)."""
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.state import AcceleratorState, GradientState

    if mixed_precision == "auto":  # bf16 autocast over fp32 master weights, on CPU and on GPUs that have it
        mixed_precision = "bf16" if not torch.cuda.is_available() or torch.cuda.is_bf16_supported() else "no"
    # Accelerate's state is a process-wide singleton; one process may train several recipes with
    # different precisions (the process group, PartialState, is kept).
    AcceleratorState._reset_state()
    GradientState._reset_state()
    # non_blocking: with a pinned-memory loader, batches go to the GPU without a host sync per tensor
    return Accelerator(mixed_precision=mixed_precision, step_scheduler_with_optimizer=False,
                       dataloader_config=DataLoaderConfiguration(non_blocking=True),
                       dynamo_plugin=dynamo_plugin(compile_mode, static_shapes),
                       **({"log_with": log_with, "project_dir": project_dir} if log_with else {}))


def fsdp_precision(accelerator) -> None:
    """Before ``prepare`` under FSDP2 with bf16/fp16: Accelerate's MixedPrecisionPolicy computes in half
    precision over the fp32 shards (what FSDP mixed precision is for) but also sets ``reduce_dtype`` and
    ``output_dtype`` to it, so gradients would be summed over processes in bf16 and the loss the model computes
    in fp32 would come back rounded to bf16 (about 3 significant digits in the log). Reduce in fp32 and leave
    the outputs as the model makes them, as torchtitan does (``mixed_precision_reduce = "float32"``, its
    default; no output cast)."""
    from accelerate.utils import DistributedType

    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    policy = getattr(plugin, "mixed_precision_policy", None)
    if accelerator.distributed_type != DistributedType.FSDP or plugin.fsdp_version != 2 or policy is None:
        return
    from torch.distributed.fsdp import MixedPrecisionPolicy

    plugin.mixed_precision_policy = MixedPrecisionPolicy(param_dtype=policy.param_dtype, reduce_dtype=torch.float32,
                                                         cast_forward_inputs=policy.cast_forward_inputs)


def skip_output_upcast(accelerator, model) -> None:
    """Undo one part of ``accelerator.prepare`` under bf16/fp16 autocast: its forward converts every
    half-precision output to fp32 (Accelerate's ConvertOutputsToFp32), the (tokens x vocabulary) logits
    included. The trainer uses only the loss, which the model computes in fp32 itself, so that copy is waste:
    5 GB written per 8k-token step of a 152k-vocabulary student, at the step's memory peak (the end of the
    forward, every activation saved). The autocast stays; Accelerate's own unwrapping
    (``keep_fp32_wrapper=False``) still works."""
    from types import MethodType

    from accelerate.utils.operations import ConvertOutputsToFp32

    inner = accelerator.unwrap_model(model)  # the module whose forward Accelerate wrapped (inside DDP, ...)
    forward = inner.__dict__.get("forward")
    function = getattr(forward, "__func__", forward)
    converter = getattr(function, "__wrapped__", None)
    if not isinstance(converter, ConvertOutputsToFp32):  # no mixed precision, or DeepSpeed's own
        return
    autocast_forward = converter.model_forward
    inner.forward = MethodType(autocast_forward, inner) if hasattr(forward, "__func__") else autocast_forward


def dynamo_plugin(mode: str | None, static_shapes: bool = False):
    """Accelerate's torch.compile settings (``mode`` None: no compiling): inductor in torch.compile's ``mode``, one
    decoder layer compiled and reused by the others (Accelerate's regional compilation, which it recommends for
    transformers: a fraction of the whole model's compile time). Sizes are static when every batch has one shape
    (``static_shapes``: packed batches in a fixed ``Layout``; what CUDA graphs, ``reduce-overhead``, need to
    replay), else dynamic from the first compile: packed rows change length and sequence count every step, and
    torch's automatic dynamic shapes recompiled each layer for every size that first varied (on an H100, still
    after 5 warmup steps: 760 ms a step). Off is said explicitly, so that no ``ACCELERATE_DYNAMO_*`` variable
    turns compiling on behind the cache key. An Accelerate without regional compilation compiles the whole model."""
    from accelerate.utils import TorchDynamoPlugin

    if mode is None:
        return TorchDynamoPlugin(backend="no")
    fields = TorchDynamoPlugin.__dataclass_fields__
    regional = {"use_regional_compilation": True} if "use_regional_compilation" in fields else {}
    return TorchDynamoPlugin(backend="inductor", mode=mode, dynamic=not static_shapes, **regional)


# ---------------------------------------------------------------------------------------------------
# GPU kernels: variable-length flash attention from PyTorch itself, and Liger's fused kernels.


def varlen_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                             sliding_window=None, cu_seq_lens_q=None, max_length_q=None, position_ids=None,
                             **unused):
    """transformers attention function (AttentionInterface) over PyTorch's flash-attention varlen kernel.

    The same computation as ``flash_attention_2`` on packed rows (each example attends causally to itself
    only, no padding computed) without the flash-attn package, which does not build or install everywhere:
    ``torch.nn.attention.varlen.varlen_attn`` ships in PyTorch (2.10+). Takes the sequence boundaries from
    ``cu_seq_lens_q`` (``pack_batch(varlen=True)``, TRL's padding-free collator) or else from the position
    ids (once per forward; the layers share the tensor). Query (B, H, T, D) in, (B, T, H, D) out, like sdpa's.
    """
    if dropout:
        raise ValueError("varlen attention has no dropout; use attn_implementation sdpa for attention dropout")
    if sliding_window is not None:
        raise ValueError("varlen attention does not do sliding windows; use sdpa or flash_attention_2")
    if attention_mask is not None:
        raise ValueError("varlen attention takes packed rows (position ids, no attention mask), not padded ones")
    if cu_seq_lens_q is None:
        if position_ids is None:
            raise ValueError("varlen attention needs cu_seq_lens_q/max_length_q or position_ids")
        cu_seq_lens_q, max_length_q = _boundaries_from_positions(position_ids)
    b, h, t, d = query.shape
    dtype = query.dtype  # the flash kernel takes fp16/bf16 only: fp32 (autocast, rotary in fp32) is cast down
    if query.is_cuda and dtype not in (torch.float16, torch.bfloat16):
        dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else torch.bfloat16
    q, k, v = (x.transpose(1, 2).reshape(b * t, x.size(1), d).to(dtype) for x in (query, key, value))
    out = _varlen_call(q, k, v, cu_seq_lens_q.to(q.device), int(max_length_q), scaling)
    out = out.view(b, t, h, d)  # under autocast the next projection takes the half-precision output as is
    return (out if torch.is_autocast_enabled("cuda") else out.to(query.dtype)), None


_last_positions: list = [None, None]  # (position ids tensor, its boundaries): one computation per forward


def _boundaries_from_positions(position_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    if _last_positions[0] is position_ids:
        return _last_positions[1]
    flat = position_ids.flatten()
    starts = (flat == 0).nonzero().flatten()
    cu = torch.cat([starts, starts.new_tensor([flat.numel()])]).to(torch.int32)
    _last_positions[:] = [position_ids, (cu, int(cu.diff().max()))]
    return _last_positions[1]


def _varlen_call(q, k, v, cu, max_len: int, scale):
    """``varlen_attn`` across its signatures: torch 2.10 has ``is_causal`` and equal head counts; later
    versions take ``window_size=(-1, 0)`` for causal and ``enable_gqa``."""
    from torch.nn.attention.varlen import varlen_attn

    params = _parameters(varlen_attn)
    kwargs = {"is_causal": True} if "is_causal" in params else {"window_size": (-1, 0)}
    if k.size(1) != q.size(1):
        if "enable_gqa" in params:
            kwargs["enable_gqa"] = True
        else:  # grouped-query attention by repeating the key/value heads
            k, v = (x.repeat_interleave(q.size(1) // x.size(1), dim=1) for x in (k, v))
    if "scale" in params:
        kwargs["scale"] = scale
    elif scale is not None and abs(scale - q.size(-1) ** -0.5) > 1e-6:
        raise ValueError(f"this torch's varlen_attn has no scale argument and the model uses {scale}")
    return varlen_attn(q, k, v, cu, cu, max_len, max_len, **kwargs)


_signatures: dict = {}  # a plain memo: torch.compile warns of possible silent errors on functools' caches


def _parameters(function) -> frozenset[str]:
    import inspect

    if function not in _signatures:
        _signatures[function] = frozenset(inspect.signature(function).parameters)
    return _signatures[function]


def register_varlen_attention() -> str:
    """Register ``varlen`` with transformers (AttentionInterface, the documented way to add an attention
    function). No mask function is registered with it: transformers then builds no mask at all."""
    from transformers import AttentionInterface

    AttentionInterface.register("varlen", varlen_attention_forward)
    return "varlen"


def varlen_available() -> bool:
    """A CUDA GPU of compute capability 8.0+ and a torch whose varlen kernel runs forward and backward
    (tried once, on a few tokens: the kernel's signature and support moved between torch versions)."""
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0):
        return False
    global varlen_error
    if varlen_error is None:
        try:
            q = torch.randn(8, 4, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            kv = torch.randn(8, 2, 64, device="cuda", dtype=torch.bfloat16)
            cu = torch.tensor([0, 3, 8], device="cuda", dtype=torch.int32)
            _varlen_call(q, kv, kv, cu, 5, None).sum().backward()
            varlen_error = "" if torch.isfinite(q.grad).all() else "the varlen kernel's gradient is not finite"
        except Exception as error:  # noqa: BLE001  (any failure means: use another attention)
            varlen_error = f"the varlen kernel fails here: {type(error).__name__}: {error}"
    return not varlen_error


varlen_error: str | None = None  # after varlen_available() on a GPU: "" or why the kernel cannot be used


def liger_supported(model_type: str) -> str | None:
    """Why Liger cannot be used here (None: it can): its kernels are Triton kernels for CUDA GPUs."""
    import importlib.util

    if not torch.cuda.is_available():
        return "Liger's kernels need a CUDA GPU"
    if importlib.util.find_spec("liger_kernel") is None:
        return "the liger-kernel package is not installed"
    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN

    if model_type not in MODEL_TYPE_TO_APPLY_LIGER_FN:
        return f"Liger has no kernels for model type {model_type!r}"
    return None


def apply_liger(model, fused_ce: bool = False) -> None:
    """Liger's kernels on a loaded model (before PEFT and ``accelerator.prepare``), as transformers' Trainer
    applies them for ``use_liger_kernel``: RMSNorm, RoPE, SwiGLU and, with ``fused_ce``, the fused linear
    cross-entropy, which never materialises the (tokens x vocabulary) logits, in chunks of ``liger_ce_chunking``.
    On an H100, Qwen2.5-0.5B shape at 8k tokens (benchmarks/gpu_mfu.py), it halves peak memory but is not faster
    (42.8k tok/s in our chunks against 44.6k without in one run; Liger's own chunks gave 31k against 51k on
    another machine), so it is off unless asked for. Its loss takes ``num_items_in_batch`` like transformers' own,
    so ``backward_window`` normalises it the same way. Note: Liger patches the model family's module (e.g.
    modeling_qwen2) for the rest of the process."""
    from liger_kernel.transformers import _apply_liger_kernel_to_instance

    _apply_liger_kernel_to_instance(model=model, fused_linear_cross_entropy=fused_ce)
    chunking = liger_ce_chunking(model.config) if fused_ce else {}
    if chunking:
        forward_with_defaults(model, chunking)


def compile_loss(model, mode: str = "default", static_shapes: bool = False) -> None:
    """The model's own loss (transformers' ``loss_function``: the logits upcast to fp32, log-softmax, the targets'
    sum over ``num_items_in_batch``) compiled like the layers, as torchtune compiles its loss beside the model:
    regional compilation leaves it to eager kernels, which write the (tokens x vocabulary) logits out again in fp32
    and read them several times (on an H100, Qwen2.5-0.5B shape at 8k tokens: cross-entropy kernels alone 8.1 of a
    step's 95 busy ms, beside 14.9 of copies and casts). Liger's fused cross-entropy replaces the forward that
    calls it: then this changes nothing."""
    model.loss_function = torch.compile(model.loss_function, backend="inductor", mode=mode, dynamic=not static_shapes)


def forward_with_defaults(model, defaults: dict) -> None:
    """``model.forward`` given ``defaults`` unless its caller passes them, as a method of whichever object holds
    it: Accelerate's regional compilation builds a new model object around the compiled layers and rebinds
    the instance's methods to it (and so does unwrapping), where a forward that called the original object's
    bound method would run the original, uncompiled layers (on an H100, Liger's fused cross-entropy with
    ``compile`` compiled no graph at all)."""
    from types import MethodType

    function = model.forward.__func__

    def forward(self, *args, **kwargs):
        return function(self, *args, **(defaults | kwargs))

    model.forward = MethodType(forward, model)


LIGER_CE_CHUNKS = 8  # torchtune's CEWithChunkedOutputLoss splits the tokens into 8 chunks by default


def liger_ce_chunking(config) -> dict:
    """Liger's fused cross-entropy keyword that makes about LIGER_CE_CHUNKS chunks of a batch's tokens.

    Liger bounds each chunk's logits to chunk_mem_const x tokens x hidden size (default 1): for a small model
    with a large vocabulary (Qwen2.5-0.5B: 151,936 x 896) that is 64-token chunks, 128 skinny matrix products
    and kernel launches per 8k-token pack, where 8 chunks of 1,024 tokens keep the GPU's matrix units busy
    for 300 MB of bf16 logits each. A Liger without the keyword keeps its own chunks."""
    import inspect
    import math

    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

    if "chunk_mem_const" not in inspect.signature(liger_fused_linear_cross_entropy).parameters:
        return {}
    return {"chunk_mem_const": max(1, math.ceil(config.vocab_size / (LIGER_CE_CHUNKS * config.hidden_size)))}


# ---------------------------------------------------------------------------------------------------
# One optimizer step's worth of gradient.


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy over target tokens (fp32: bf16 log-softmax is too coarse); the
    reference for the loss the model computes itself in ``backward_window``."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE,
                           reduction="sum")


def loss_positions(labels: torch.Tensor, every_position: bool = False) -> dict:
    """The number of tokens that carry a loss (the first label has no prediction before it); the positions
    whose next token is a target in some row of the batch, and those next tokens: the model
    computes its LM head and loss there only (transformers' ``logits_to_keep`` and ``shift_labels``), not at
    prompt and padding positions, as TRL's fused LM head does. The head is (vocabulary x hidden) per position,
    a fifth of SmolLM2-135M's matrix work; prompts are most of a System-1 example's tokens (82 % in
    benchmarks/sft_loss_positions.py). Computed here on the CPU: ``nonzero`` on the GPU would cost a
    device-to-host sync. ``every_position``: the head everywhere (``logits_to_keep`` 0), a shape that does not
    depend on the labels."""
    shifted = labels[:, 1:]
    targets = int((shifted != IGNORE).sum())
    if every_position:
        return {"targets": targets, "logits_to_keep": 0, "shift_labels": F.pad(shifted, (0, 1), value=IGNORE)}
    keep = (shifted != IGNORE).any(0).nonzero().flatten()
    return {"targets": targets, "logits_to_keep": keep, "shift_labels": shifted[:, keep]}


def backward_window(accelerator, model, batches: list[dict]) -> tuple[float, int]:
    """Accumulate the gradient of (sum of token losses) / (target tokens in the whole window, all processes).

    Accelerate's recipe for variable-size samples (docs: usage_guides/gradient_accumulation.md, "Gradient
    accumulation on training samples of variable size"): a mean of per-batch means would weigh a short
    batch's tokens more than a long batch's. The model computes the loss itself, given ``labels`` and
    ``num_items_in_batch`` (transformers' ForCausalLMLoss, or Liger's fused linear cross-entropy: both sum
    over targets and divide by that count, in fp32), so the logits need not be kept or upcast here. The
    Accelerator is built with gradient_accumulation_steps=1 (this loop forms the window itself), so
    ``backward`` does not rescale; DDP averages gradients over processes, hence the factor num_processes.
    One device-to-host sync (the loss for the log) per window. Returns the window's mean token loss and its
    token count.
    """
    window_targets = sum(b["targets"] for b in batches)
    if accelerator.num_processes > 1:
        window_targets = int(accelerator.gather(torch.tensor([window_targets], device=accelerator.device)).sum())
    # a tensor on the device, as the HF Trainer passes it: a compiled loss takes each window's count as an input
    # instead of recompiling for it
    denominator = torch.tensor(max(window_targets, 1), device=accelerator.device)
    loss_sum = torch.zeros((), device=accelerator.device)
    for i, batch in enumerate(batches):
        last = i == len(batches) - 1
        # no gradient all-reduce before the window's last micro-batch
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            # labels only switch the loss on: with shift_labels given, the loss reads those (transformers, Liger)
            loss = model(**model_inputs(batch), labels=batch["shift_labels"], shift_labels=batch["shift_labels"],
                         logits_to_keep=batch["logits_to_keep"], num_items_in_batch=denominator).loss
            accelerator.backward(loss * accelerator.num_processes)
        loss_sum += loss.detach()
    if accelerator.num_processes > 1:
        loss_sum = accelerator.reduce(loss_sum, reduction="sum")
    return loss_sum.item(), window_targets


def optimizer_step(accelerator, model, optimizer, schedule, window: list[dict], max_grad_norm: float) -> dict:
    """One update from a window of micro-batches; returns its mean token loss and token counts (all processes), the
    learning rate the update used and the gradient norm before clipping.

    Under CUDA graphs (``compile_mode`` reduce-overhead) the step first tells cudagraph trees that a new iteration
    begins, the documented call for a training loop (torch.compiler.cudagraph_mark_step_begin), rather than leave
    it to their guess from pending backwards, which a forward output outside the loss's graph defeats (graphs
    recorded again every step). Without CUDA graphs the call only bumps a counter.

    ``max_grad_norm`` 0 clips nothing but still measures the norm: an infinite bound scales every gradient by
    exactly 1.0, through the same Accelerate call that knows how to sum a sharded (FSDP) norm. The norm is read
    on the host only after the optimizer's kernels are queued, so it adds no stall before them.
    """
    torch.compiler.cudagraph_mark_step_begin()
    lr = optimizer.param_groups[0]["lr"]  # what this update uses (DeepSpeed steps inside backward_window)
    loss, targets = backward_window(accelerator, model, window)
    norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm if max_grad_norm > 0 else math.inf)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)
    real, computed = sum(b["real_tokens"] for b in window), sum(b["input_ids"].numel() for b in window)
    if accelerator.num_processes > 1:
        counts = accelerator.reduce(torch.tensor([real, computed], device=accelerator.device), reduction="sum")
        real, computed = counts.tolist()
    return {"loss": loss, "targets": targets, "real_tokens": int(real), "computed_tokens": int(computed),
            "lr": lr, "grad_norm": float(norm) if norm is not None else None}  # DeepSpeed's engine may not say
