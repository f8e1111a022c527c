"""Training tokens/s and MFU on a GPU: the `sft` trainer's step against TRL's SFTTrainer and a plain
transformers loop, on a random-init model of a real shape and packed sequences of reasoning-trace lengths.

    python benchmarks/gpu_mfu.py                    # Qwen2.5-0.5B shape, 8k packs, the default matrix below
    python benchmarks/gpu_mfu.py --shape tiny --seq 512 --steps 2 --warmup 1 --configs sdpa   # CPU smoke test
    python benchmarks/gpu_mfu.py --configs varlen+compile,varlen --warmup 5 --profile 2   # and where the time goes

The matrix is --configs (ATTN, then optionally +liger or +liger-fce, +compile or +cudagraphs, +fsdp, and +batchN:
N packed sequences a step instead of --batch) x --sides (ours, plain, trl); ``CONFIG@ours`` (or ``@ours+trl``) runs
only those sides for that config. ATTN is a transformers attention implementation or ``varlen`` (PyTorch's own
flash-attention varlen kernel, registered by the `sft` trainer's steps module); ``+liger`` applies Liger's layer
kernels (RMSNorm, RoPE, SwiGLU), ``+liger-fce`` its fused linear cross-entropy too: ours through the trainer's
``apply_liger``, plain with Liger's ``_apply_liger_kernel_to_instance`` (the same kernels), TRL through its
``use_liger_kernel`` (layer kernels only: TRL computes the loss with its own chunked LM head).
``+compile`` is torch.compile (inductor, default mode) of each decoder layer and of the other leaf modules,
Accelerate's regional compilation, ``+cudagraphs`` the same in mode ``reduce-overhead`` (each compiled region
replayed as a CUDA graph: one launch where eager launches every kernel). Ours through the trainer's
``make_accelerator`` (``compile: true``, ``compile_mode``) and ``compile_loss`` (the loss compiled too), plain with
Accelerate's ``compile_regions`` (the same call, by hand; transformers' loss left eager), both on the batches laid
out as the trainer lays out a compiled packed run (``steps.Layout``: every step one shape, so static sizes and one
graph); TRL with ``torch_compile=True``, ``torch_compile_mode``, ``ACCELERATE_DYNAMO_USE_REGIONAL_COMPILATION`` and
``ACCELERATE_DYNAMO_USE_DYNAMIC`` (its padding-free rows change length every step; with automatic dynamic shapes each
layer recompiled for every size that first varied, on an H100 still during the timed steps). The warmup steps absorb
the compilations: ``compile_s`` is their time beyond that many timed steps, ``graphs_in_timed_steps`` counts graphs
compiled during the timed steps (0, or the warmup was too short: raise --warmup), ``recompile_guards`` and
``graph_breaks`` say where compiled code was left, ``cudagraph_skips`` (and, on a GPU, ``cudagraph_skip_reasons``)
where CUDA graphs were not used, ``cudagraph_recordings_in_timed_steps`` whether graphs were recorded again. Only
the first compiling process of a run compiles cold; the later ones find inductor's on-disk cache (CPU, tiny shape:
52 s, then 3-8 s).
``+fsdp`` runs the pair as one process under ``accelerate launch --config_file configs/accelerate/fsdp.yaml``, as
the trainer runs with ``accelerate_config`` set: FSDP2's mixed precision computes in bf16 over the fp32 shards (the
residual stream, norms and activations too, half the bytes of autocast's fp32 residual stream) instead of
autocasting; ours and TRL only (plain has no Accelerate), and on a CPU Accelerate runs it unsharded (the row's
``distributed`` says what ran).
Otherwise all sides: fp32 master weights with bf16 autocast, fused AdamW, clipping at 1.0, lr 2e-5, no gradient
checkpointing, the same packed examples (TRL packs them itself, also best-fit decreasing, padding-free),
``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True``. Ours and TRL compute the LM head only where the next
token is a target (TRL's fused LM head; ours through ``logits_to_keep``), skipping the prompts (about 4 % of
the tokens here); plain computes it everywhere. MFU credits every side with the same model FLOPs per token.

Self-contained for a bare GPU box: needs torch, transformers and accelerate; TRL (and its `datasets`) only
for the TRL side, liger-kernel only for +liger; a missing one is reported as an error row. nt-harness
itself is not imported: the `sft` trainer's step functions are loaded from plugins/nt_sft/steps.py by
path. Each (config, side) pair runs in its own process, so one failing or running out of memory does not
stop the others; pairs that would start past --budget-s seconds are skipped. One JSON line per pair on
stdout and in $OUT/gpu_mfu.jsonl, then a table with the ratios ours/plain and ours/TRL per config, and ours over
ours in the first config (what each setting buys the trainer, in the same run; also
$OUT/gpu_mfu_summary.json).

``--profile N`` runs N more steps under torch's profiler and adds, per pair, a step's GPU time by kernel
category (matmul, attention, cross-entropy, optimizer and clipping, Triton-fused, copies and casts, other),
the busiest kernels, and the share of the step the GPU sat idle waiting on the host (launch overhead, which
compiling or CUDA graphs would remove; the rest is what faster kernels or fewer bytes must win).

MFU counts the model FLOPs of the real (non-padding) tokens: 6 x parameters per token (the tied embedding
counted once, as the output head) plus causal attention, 12 x layers x (heads x head size) x the keys each
token attends to within its own example (QK^T and AV, 2 FLOPs a multiply-add, backward twice forward), so
packing is not credited with attention it rightly skips. Peak: dense bf16 of the card's spec sheet.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import NamedTuple

import torch

SHAPES = {  # Qwen2.5 configs (Qwen team, Qwen2.5 technical report, Table 1); tiny is for CPU smoke tests
    "tiny": dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2),
    "qwen2.5-0.5b": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2),
    "qwen2.5-1.5b": dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2),
}
PEAK_BF16 = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12}  # dense bf16, vendor spec sheets (SXM)
# most telling first: pairs past --budget-s are skipped, so a short device call still measures the baseline and
# the likeliest ways to fewer launches and bytes (measured on an H100, eager varlen leaves the GPU idle 48 % of a
# step waiting on the host; Liger's fused cross-entropy takes a quarter off its busy time, and frees the memory for
# 4 packs a step, over which the optimizer's fixed 7.5 ms spread); @ours skips the sides whose figure matters less
# than the budget it would take
DEFAULT_CONFIGS = ("varlen,varlen+cudagraphs@ours,varlen+liger-fce+cudagraphs@ours,"
                   "varlen+liger-fce+cudagraphs+batch4@ours,varlen+compile,varlen+liger-fce@ours,varlen+fsdp,sdpa")
ROW_KERNELS = ("varlen", "flash_attention_2", "flash_attention_3")  # take the packs of a batch as one row
FSDP_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "accelerate" / "fsdp.yaml"


def load_steps():
    """plugins/nt_sft/steps.py as a module, without importing nt_sft (whose package imports nt-harness)."""
    path = Path(__file__).resolve().parents[1] / "plugins" / "nt_sft" / "steps.py"
    spec = importlib.util.spec_from_file_location("nt_sft_steps", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # torch.compile imports the modules of the functions it traces by name
    spec.loader.exec_module(module)
    return module


def synthetic_examples(n: int, vocab: int, seq: int, seed: int) -> list[dict]:
    """Prompt + response token ids of reasoning-trace lengths (responses 1/16..3/4 of a pack), prompt masked."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt, response = rng.randint(32, max(33, seq // 32)), rng.randint(max(2, seq // 16), max(3, 3 * seq // 4))
        ids = [rng.randrange(vocab) for _ in range(prompt + response)]
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return out


def build_model(shape: str, seq: int, attn: str, device: str):
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(**SHAPES[shape], max_position_embeddings=max(seq, 4096), tie_word_embeddings=True,
                         use_cache=False)
    torch.manual_seed(0)
    with torch.device(device):  # initialised on the GPU: seconds less per process than on the CPU
        model = AutoModelForCausalLM.from_config(config, attn_implementation=attn, dtype=torch.float32)
    return model, config  # fp32 master weights; bf16 autocast in the step


def work(lengths: list[int]) -> tuple[int, int]:
    """(real tokens, sum over them of the keys each attends to) for causal examples of these lengths."""
    return sum(lengths), sum(n * (n + 1) // 2 for n in lengths)


def versions() -> dict:
    import importlib.metadata as md

    out = {"torch": torch.__version__}
    for name in ("transformers", "accelerate", "trl", "datasets", "liger-kernel", "triton"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


class Config(NamedTuple):
    attn: str
    liger: bool
    fused_ce: bool
    compile_mode: str | None  # torch.compile's mode, None: eager
    fsdp: bool
    batch: int | None  # packed sequences per step, None: --batch


def parse_config(name: str) -> Config:
    """ATTN[+liger|+liger-fce][+compile|+cudagraphs][+fsdp][+batchN]."""
    attn, *flags = name.split("+")
    batches = [f for f in flags if re.fullmatch(r"batch[1-9][0-9]*", f)]
    unknown = set(flags) - {"liger", "liger-fce", "compile", "cudagraphs", "fsdp", *batches}
    if unknown or len(flags) != len(set(flags)) or {"liger", "liger-fce"} <= set(flags) \
            or {"compile", "cudagraphs"} <= set(flags) or len(batches) > 1:
        raise SystemExit(f"config {name!r}: ATTN, then optionally +liger or +liger-fce, +compile or +cudagraphs, "
                         "+fsdp and +batchN")
    mode = "reduce-overhead" if "cudagraphs" in flags else "default" if "compile" in flags else None
    return Config(attn, bool({"liger", "liger-fce"} & set(flags)), "liger-fce" in flags, mode, "fsdp" in flags,
                  int(batches[0][5:]) if batches else None)


def compiled_graphs() -> int:
    """Graphs dynamo has compiled so far in this process."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def watch_compiler() -> dict[str, list[str]]:
    """From now on in this process: the guards whose failure made dynamo recompile (what ``TORCH_LOGS=recompiles``
    prints), and inductor's CUDA-graph recordings and reasons for skipping CUDA graphs (``TORCH_LOGS=cudagraphs``): a
    compiled step that keeps compiling or recording says here which size or value it was specialised on, and one that
    still launches kernel by kernel says why."""
    import logging

    seen: dict[str, list[str]] = {"recompile_guards": [], "cudagraph_skips": [], "cudagraph_recordings": []}

    class Keep(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if record.name.endswith("__recompiles"):
                seen["recompile_guards"] += [line.strip()[2:] for line in message.splitlines()
                                             if line.strip().startswith("- ")]
            elif message.startswith("skipping cudagraphs"):
                seen["cudagraph_skips"].append(message)
            elif "Recording function" in message:
                seen["cudagraph_recordings"].append(message)

    torch._logging.set_logs(recompiles=True, cudagraphs=True)
    for name in ("torch._dynamo.guards.__recompiles", "torch._inductor.cudagraph_utils.__cudagraphs",
                 "torch._inductor.cudagraph_trees.__cudagraphs"):
        logging.getLogger(name).addHandler(Keep())
    return seen


def compiler_notes(seen: dict[str, list[str]]) -> dict:
    """Recompilations, graph breaks and CUDA graphs skipped (inductor's count; the reasons on a GPU), the most
    frequent first: where a compiled model leaves the graph."""
    from collections import Counter

    from torch._dynamo.utils import counters

    def top(counts) -> dict:
        return {k[:240]: n for k, n in Counter(counts).most_common(5)}

    return {"recompile_guards": top(seen["recompile_guards"]), "graph_breaks": top(counters["graph_break"]),
            "cudagraph_skips": counters["inductor"]["cudagraph_skips"],
            "cudagraph_skip_reasons": top(seen["cudagraph_skips"]),
            "cudagraph_recordings": len(seen["cudagraph_recordings"])}


def compiled_modules(model) -> int:
    """torch.compile wrappers in the trained module tree: 1 for a whole-model compile, one per decoder layer
    and other leaf module (28 for Qwen2.5-0.5B) for Accelerate's regional compilation, 0 for none."""
    from torch._dynamo.eval_frame import OptimizedModule

    return sum(isinstance(m, OptimizedModule) for m in model.modules())


def step_batches(steps_mod, args, batch: int, row: bool, compile: bool):
    """(examples, packs, each step's packs, each step's batch): the packed steps ours and plain train on, the
    examples TRL packs itself."""
    examples = synthetic_examples(args.examples * batch, SHAPES[args.shape]["vocab_size"], args.seq, args.seed)
    lengths = [len(e["input_ids"]) for e in examples]
    packs = [[examples[i] for i in p] for p in steps_mod.pack_examples(lengths, args.seq)]
    # in a seeded random order, as the trainer's sampler and TRL's draw them (best-fit decreasing puts the
    # longest examples, with the most attention per token, in the first packs)
    random.Random(args.seed).shuffle(packs)
    chunks = [packs[i : i + batch] for i in range(0, len(packs), batch)]
    needed = args.warmup + args.steps + args.profile
    if len(chunks) < needed:
        raise SystemExit(f"{len(chunks)} batches of packs for {needed} steps: raise --examples")
    chunks = chunks[:needed]
    # compiled, in one shape for every step, as the trainer lays out a compiled run's packs
    layout = steps_mod.Layout.of(packs, batch, args.seq) if compile else None
    batches = [steps_mod.pack_batch(chunk, 0, one_row=row, varlen=row, layout=layout) for chunk in chunks]
    return examples, packs, chunks, batches


def side_model(side: str, steps_mod, args, attn: str, liger: bool, fused_ce: bool, compile_mode, device: str):
    """The model as the side sets it up before training: ours as the trainer does, plain by hand."""
    model, config = build_model(args.shape, args.seq, attn, device)
    if liger and side == "ours":
        steps_mod.apply_liger(model, fused_ce)  # what the trainer does
    elif liger and side == "plain":
        from liger_kernel.transformers import _apply_liger_kernel_to_instance

        _apply_liger_kernel_to_instance(model=model, fused_linear_cross_entropy=fused_ce)
    if compile_mode is not None and side == "ours":
        steps_mod.compile_loss(model, compile_mode, static_shapes=True)  # the trainer's too
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, config


def run_one(side: str, config_name: str, args) -> dict:
    attn, liger, fused_ce, compile_mode, _, batch = parse_config(config_name)
    compile, batch = compile_mode is not None, batch or args.batch
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(args.threads)
    steps_mod = load_steps()
    if attn == "varlen":
        steps_mod.register_varlen_attention()
        if not steps_mod.varlen_available():
            raise SystemExit(f"varlen: {steps_mod.varlen_error or 'needs a CUDA GPU of compute capability 8.0+'}")
    examples, packs, chunks, batches = step_batches(steps_mod, args, batch, attn in ROW_KERNELS, compile)
    model, config = side_model(side, steps_mod, args, attn, liger, fused_ce, compile_mode, device)
    leak = packing_leak(model, packs[0], device) if side == "ours" else None
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    watched = watch_compiler() if compile else None
    clock = StepClock(args.warmup, args.steps, args.profile, watched)
    if side == "ours":
        losses, trained = run_ours(steps_mod, model, batches, clock, compile_mode)
    elif side == "plain":
        losses, trained = run_plain(model, batches, clock, device, compile_mode)
    elif side == "trl":  # TRL packs by itself (also best-fit decreasing): its steps hold other examples
        losses, step_lengths, trained = run_trl(model, examples, args, batch, clock, device, liger, compile_mode)
    else:
        raise SystemExit(f"unknown side {side}")
    if side != "trl":
        step_lengths = [[len(e["input_ids"]) for pack in chunk for e in pack] for chunk in chunks]
    seconds = clock.timed_s
    timed, profiled_steps = slice(args.warmup, args.warmup + args.steps), slice(args.warmup + args.steps, len(chunks))
    timed_lengths = [n for step in step_lengths[timed] for n in step]
    # padding included; TRL is padding-free: one row of examples end to end
    computed = sum(b["input_ids"].numel() for b in batches[timed]) if side != "trl" else sum(timed_lengths)
    real, _ = work(timed_lengths)
    attn_width = config.num_attention_heads * (getattr(config, "head_dim", None)
                                               or config.hidden_size // config.num_attention_heads)

    def model_flops(lengths: list[int]) -> dict:
        """Matrix products (6 x parameters per token) and causal attention within each example."""
        tokens, contexts = work(lengths)
        return {"matmul": 6 * n_params * tokens, "attention": 12 * config.num_hidden_layers * attn_width * contexts}

    flops = sum(model_flops(timed_lengths).values())
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    peak = args.peak_tflops * 1e12 if args.peak_tflops else next((v for k, v in PEAK_BF16.items() if k in name), None)
    memory = torch.cuda.memory_stats() if device == "cuda" else {}
    distributed = "NO"
    if side != "plain":  # what Accelerate made of the launch: FSDP, or NO (one process, or +fsdp on a CPU)
        from accelerate.state import PartialState

        distributed = PartialState().distributed_type.value
    return {
        "config": config_name, "side": side, "attn": attn, "liger": liger, "compile": compile_mode, "shape": args.shape,
        "seq": args.seq, "batch": batch, "device": name, **versions(), "params": n_params,
        "distributed": distributed,
        "gradient_checkpointing": args.gradient_checkpointing, "timed_steps": args.steps, "real_tokens": real,
        "packing_efficiency": round(real / computed, 4), "step_s": round(seconds / args.steps, 4),
        "tokens_per_s": round(real / seconds), "tflops_per_s": round(flops / seconds / 1e12, 2),
        "mfu": round(flops / seconds / peak, 4) if peak else None,
        "peak_mem_gib": round(memory.get("allocated_bytes.all.peak", 0) / 2**30, 2) if memory else None,
        "reserved_gib": round(memory.get("reserved_bytes.all.peak", 0) / 2**30, 2) if memory else None,
        "alloc_retries": memory.get("num_alloc_retries") if memory else None,
        "losses": [round(x, 4) for x in losses],
        "warmup_s": round(clock.warmup_s, 2),
        "compile_s": round(clock.warmup_s - args.warmup * seconds / args.steps, 2),
        "compiled_modules": compiled_modules(trained), "graphs": compiled_graphs(),
        "graphs_in_timed_steps": compiled_graphs() - clock.graphs_at_timing,
        **(compiler_notes(watched) | {"cudagraph_recordings_in_timed_steps": clock.recordings_in_timed_steps()}
           if compile else {}),
        "leak_check": leak,
        **({"profile": profiled(clock, seconds / args.steps, model_flops(
            [n for step in step_lengths[profiled_steps] for n in step]))} if clock.trace else {}),
    }


def profiled(clock: StepClock, step_s: float, flops: dict) -> dict:
    """The breakdown, or why there is none: the timings above are worth keeping either way."""
    try:
        # beside step_ms, the profiled steps' own time shows what the profiler itself cost
        return breakdown(clock.trace, clock.profile, step_s, flops) | {
            "profiled_step_ms": round(1e3 * clock.profiled_s / clock.profile, 2)}
    except Exception as error:  # noqa: BLE001 - reported in the row
        return {"error": f"{type(error).__name__}: {error}"}


def packing_leak(model, pack: list[dict], device: str) -> dict:
    """Largest difference of an example's last hidden states alone and packed after the others, and the same
    for a control row whose positions do not restart (so its examples do attend to each other): bf16-sized
    for ``packed`` against O(control) means no attention crosses examples with this implementation."""
    ids = [torch.tensor(e["input_ids"][:1024], device=device) for e in pack]  # a prefix keeps this cheap
    if len(ids) < 2:
        return {"skipped": "a pack of one example"}
    row = torch.cat(ids)[None]
    restart = torch.cat([torch.arange(len(t), device=device) for t in ids])[None]
    model.eval()
    out = {}
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16):
        alone = model.model(input_ids=ids[-1][None], use_cache=False).last_hidden_state[0].float()
        for key, positions in (("packed", restart), ("control", torch.arange(row.size(1), device=device)[None])):
            hidden = model.model(input_ids=row, position_ids=positions, use_cache=False).last_hidden_state[0]
            out[key] = round(float((hidden[-len(ids[-1]):].float() - alone).abs().max()), 4)
    model.train()
    return out


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def synchronize():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


class StepClock:
    """Seconds of the timed steps and of the warmup steps (where the compilations happen), each step between
    device synchronisations; how many graphs were compiled when the timed steps began (and CUDA graphs recorded
    during them); and, with ``profile`` steps after the timed ones, torch's profiler over those (their time counts in
    neither)."""

    def __init__(self, warmup: int, timed: int, profile: int = 0, watched: dict | None = None):
        self.warmup, self.timed, self.profile, self.step, self.started = warmup, timed, profile, 0, 0.0
        self.timed_s, self.warmup_s, self.profiled_s, self.graphs_at_timing = 0.0, 0.0, 0.0, 0
        self.profiler, self.trace = None, None
        self.watched, self.recorded = watched, {}  # CUDA graphs recorded by the start and the end of the timed steps

    def recordings(self) -> int:
        return len(self.watched["cudagraph_recordings"]) if self.watched else 0

    def recordings_in_timed_steps(self) -> int:
        """CUDA graphs recorded during the timed steps: 0, or the graphs were not replayed as they stood."""
        return self.recorded.get("end", 0) - self.recorded.get("start", 0)

    def begin(self):
        if self.step == self.warmup:
            self.graphs_at_timing = compiled_graphs()
            self.recorded["start"] = self.recordings()
        if self.profile and self.step == self.warmup + self.timed:
            from torch.profiler import ProfilerActivity, profile

            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
            self.profiler = profile(activities=activities)
            self.profiler.start()
        synchronize()
        self.started = time.perf_counter()

    def end(self):
        synchronize()
        elapsed = time.perf_counter() - self.started
        if self.warmup <= self.step < self.warmup + self.timed:
            self.timed_s += elapsed
        elif self.step < self.warmup:
            self.warmup_s += elapsed
        else:
            self.profiled_s += elapsed
        self.step += 1
        if self.step == self.warmup + self.timed:
            self.recorded["end"] = self.recordings()
        if self.profiler is not None and self.step == self.warmup + self.timed + self.profile:
            self.profiler.stop()
            path = Path(os.environ.get("TMPDIR", "/tmp")) / f"gpu-mfu-trace-{os.getpid()}.json"
            self.profiler.export_chrome_trace(str(path))
            self.trace = json.loads(path.read_text())["traceEvents"]
            path.unlink()
            self.profiler = None


# Where a step's time goes, by the names of the GPU kernels (or, on the CPU, of the aten ops): first match wins.
CATEGORIES = (
    ("attention", r"flash|fmha|attention|attn|flex"),
    ("cross-entropy", r"softmax|logsumexp|nll_loss|cross_?entropy"),
    ("optimizer+clip", r"multi_tensor|adam|foreach"),
    ("matmul", r"gemm|nvjet|xmma|cutlass|gemv|splitk|aten::(add|b|baddb)?mm_?$"),
    ("communication", r"nccl"),
    ("triton fused", r"triton|^_rms_norm|^_swiglu|rope"),
    ("copies+casts", r"memcpy|memset|copy"),
)
DEVICE_EVENTS = {"kernel", "gpu_memcpy", "gpu_memset"}


def category(name: str) -> str:
    return next((label for label, pattern in CATEGORIES if re.search(pattern, name, re.IGNORECASE)), "other")


def breakdown(trace: list[dict], steps: int, step_s: float, flops: dict | None = None) -> dict:
    """Milliseconds per step by category and the busiest kernels, from a chrome trace of ``steps`` steps; busy is
    the union of the kernels' intervals, so ``idle_share`` (of the unprofiled step time) is the GPU waiting on
    the host: launch overhead that compiling or CUDA graphs would remove. Without GPU kernels (the CPU smoke
    test) the aten ops' self times stand in. Given the model FLOPs of those steps by category, the TFLOP/s its
    kernels reached: matmuls near the card's peak leave the rest of the step to win, far below it say the
    products themselves are too small or too many."""
    events = [e for e in trace if e.get("cat") in DEVICE_EVENTS and e.get("dur") is not None]
    if events:
        intervals = [(float(e["ts"]), float(e["dur"])) for e in events]
        own = [(e["name"], dur) for e, (_, dur) in zip(events, intervals)]
    else:  # CPU: ops nest in their thread, so an op's own time is its span less its direct children's
        ops = sorted((e for e in trace if e.get("cat") == "cpu_op" and e.get("dur") is not None),
                     key=lambda e: (e["tid"], float(e["ts"]), -float(e["dur"])))
        intervals = [(float(e["ts"]), float(e["dur"])) for e in ops]
        own, stack = [], []  # stack: [thread, end, name, own time] of the ops that enclose this one
        for e, (ts, dur) in zip(ops, intervals):
            while stack and (stack[-1][0] != e["tid"] or ts >= stack[-1][1]):
                own.append(tuple(stack.pop()[2:]))
            if stack:
                stack[-1][3] -= dur
            stack.append([e["tid"], ts + dur, e["name"], dur])
        own += [tuple(item[2:]) for item in stack]
    busy, end = 0.0, float("-inf")
    for ts, dur in sorted(intervals):
        busy += max(0.0, ts + dur - max(ts, end))
        end = max(end, ts + dur)
    per_name: dict[str, list] = {}  # name: [time, calls]
    for name, dur in own:
        total = per_name.setdefault(name, [0.0, 0])
        total[0] += dur
        total[1] += 1
    per_category: dict[str, float] = {}
    for name, (t, _) in per_name.items():  # a step has thousands of kernels but few distinct names
        label = category(name)
        per_category[label] = per_category.get(label, 0.0) + t
    ms = 1e-3 / steps  # trace times are microseconds
    top = sorted(per_name.items(), key=lambda kv: -kv[1][0])[:8]
    return {
        "source": "gpu kernels" if events else "cpu ops (self time)", "steps": steps,
        # launches per step: at a few µs of host time each, many thousands make a step launch-bound
        "kernels": round(len(own) / steps), "step_ms": round(1e3 * step_s, 2), "busy_ms": round(busy * ms, 2),
        "idle_share": round(max(0.0, 1 - busy * ms / (1e3 * step_s)), 3),
        "ms_by_category": {k: round(v * ms, 2) for k, v in sorted(per_category.items(), key=lambda kv: -kv[1])},
        "top": [{"name": name[:100], "ms": round(t * ms, 2), "calls": round(n / steps, 1),
                 "category": category(name)} for name, (t, n) in top],
        # where the launches come from, when the GPU waits on the host
        "most_launched": [{"name": name[:100], "calls": round(n / steps, 1), "ms": round(t * ms, 2)}
                          for name, (t, n) in sorted(per_name.items(), key=lambda kv: -kv[1][1])[:6]],
        "tflops_per_s": {k: round(f / (per_category[k] * 1e-6) / 1e12, 1)
                         for k, f in (flops or {}).items() if per_category.get(k)},
    }


def run_ours(steps_mod, model, batches, clock, compile_mode: str | None) -> tuple[list[float], torch.nn.Module]:
    """The `sft` trainer's own step: Accelerate (compiling, if asked, as the trainer does a packed run: one
    shape), token-normalised backward, clipping, fused AdamW, schedule."""
    from types import SimpleNamespace

    settings = SimpleNamespace(lr=2e-5, weight_decay=0.1, adam_beta2=0.999, warmup_ratio=0.0, schedule="constant",
                               min_lr_ratio=0.1)
    accelerator = steps_mod.make_accelerator("bf16", compile_mode, static_shapes=True)
    optimizer = steps_mod.build_optimizer(model, settings, fused=accelerator.device.type == "cuda")
    schedule = steps_mod.build_schedule(optimizer, settings, len(batches))
    steps_mod.fsdp_precision(accelerator)
    model, optimizer, schedule = accelerator.prepare(model, optimizer, schedule)
    steps_mod.skip_output_upcast(accelerator, model)
    losses = []
    for batch in batches:
        batch = to_device(batch, accelerator.device)
        clock.begin()
        step = steps_mod.optimizer_step(accelerator, model, optimizer, schedule, [batch], 1.0)
        clock.end()
        losses.append(step["loss"])
    return losses, model


def run_plain(model, batches, clock, device, compile_mode: str | None) -> tuple[list[float], torch.nn.Module]:
    """The reference: transformers' own loss (Liger's, with +liger), torch autocast, fused AdamW, nothing else;
    compiled, the layers compiled as the trainer's Accelerate does (``compile_regions``, else the whole model)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.1, fused=device == "cuda")
    if compile_mode:
        try:
            from accelerate.utils import compile_regions
        except ImportError:  # an Accelerate without regional compilation: the trainer compiles the whole model too
            model = torch.compile(model, backend="inductor", mode=compile_mode, dynamic=False)
        else:
            model = compile_regions(model, backend="inductor", mode=compile_mode, dynamic=False)
    keys = ("input_ids", "position_ids", "labels", "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")
    losses = []
    for batch in batches:
        inputs = to_device({k: batch[k] for k in keys if k in batch}, device) | {"use_cache": False}
        clock.begin()
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        clock.end()
    return losses, model


def run_trl(model, examples, args, batch: int, clock, device, liger: bool, compile_mode: str | None) -> tuple:
    """TRL's SFTTrainer on the same examples, already tokenized: its best-fit-decreasing packing, padding-free."""
    from datasets import Dataset
    from transformers import PreTrainedTokenizerFast, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    dataset = Dataset.from_dict({
        "input_ids": [e["input_ids"] for e in examples],
        "completion_mask": [[int(t != -100) for t in e["labels"]] for e in examples],
    })

    class Clocked(TrainerCallback):
        def on_step_begin(self, *unused, **unused_kw):
            clock.begin()

        def on_step_end(self, *unused, **unused_kw):
            clock.end()

    if compile_mode:  # the Trainer's TorchDynamoPlugin reads these when the arguments are not given (transformers 5)
        os.environ["ACCELERATE_DYNAMO_USE_REGIONAL_COMPILATION"] = "true"
        os.environ["ACCELERATE_DYNAMO_USE_DYNAMIC"] = "true"

    from tokenizers import Tokenizer, models

    # TRL wants a tokenizer for its pad token only: the data are ids already
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<pad>": 0, "<eos>": 1}, "<pad>")),
                                        pad_token="<pad>", eos_token="<eos>")
    config = SFTConfig(
        output_dir=os.environ.get("TMPDIR", "/tmp") + "/gpu-mfu-trl", per_device_train_batch_size=batch,
        max_steps=args.warmup + args.steps + args.profile, learning_rate=2e-5, lr_scheduler_type="constant",
        weight_decay=0.1, max_grad_norm=1.0, optim="adamw_torch_fused" if device == "cuda" else "adamw_torch",
        max_length=args.seq, packing=True, completion_only_loss=True, bf16=True, use_cpu=device == "cpu",
        use_liger_kernel=liger, torch_compile=compile_mode is not None, torch_compile_mode=compile_mode,
        gradient_checkpointing=args.gradient_checkpointing,
        logging_steps=1, report_to="none", save_strategy="no", dataloader_num_workers=0, disable_tqdm=True,
        seed=args.seed,
    )
    seen: list[list[int]] = []

    class Recording(SFTTrainer):
        """Notes each step's example lengths (from the position ids TRL's padding-free packing makes)."""

        def training_step(self, model, inputs, *rest, **kw):
            starts = (inputs["position_ids"].flatten() == 0).nonzero().flatten().tolist()
            seen.append([b - a for a, b in zip(starts, starts[1:] + [inputs["position_ids"].numel()])])
            return super().training_step(model, inputs, *rest, **kw)

    trainer = Recording(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                        callbacks=[Clocked()])
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return losses, seen, trainer.model_wrapped


def summary(rows: list[dict]) -> list[dict]:
    """Per config: each side's tokens/s, MFU and peak memory; ours over plain, over TRL and over the first
    config's ours."""
    out = []
    first = next((r for r in rows if r["side"] == "ours"), {})
    for config in dict.fromkeys(r["config"] for r in rows):
        by_side = {r["side"]: r for r in rows if r["config"] == config and "tokens_per_s" in r}
        line = {"config": config}
        for side, r in by_side.items():
            line[side] = {k: r.get(k) for k in ("tokens_per_s", "mfu", "peak_mem_gib", "compile_s",
                                                 "graphs_in_timed_steps")}
        if "ours" in by_side and "tokens_per_s" in first:
            line["ours_over_first_ours"] = round(by_side["ours"]["tokens_per_s"] / first["tokens_per_s"], 3)
        for other in ("plain", "trl"):
            if "ours" in by_side and other in by_side:
                ours, theirs = by_side["ours"], by_side[other]
                line[f"ours_over_{other}"] = round(ours["tokens_per_s"] / theirs["tokens_per_s"], 3)
                if ours["mfu"] and theirs["mfu"]:  # TRL trains on other packs: FLOPs/s weighs their attention
                    line[f"ours_over_{other}_mfu"] = round(ours["mfu"] / theirs["mfu"], 3)
        if "ours" in by_side and "plain" in by_side:  # the same batches from the same weights: the same losses
            line["max_loss_diff_ours_plain"] = round(max(
                abs(a - b) for a, b in zip(by_side["ours"]["losses"], by_side["plain"]["losses"])), 4)
        line["failed"] = [r["side"] for r in rows if r["config"] == config and "tokens_per_s" not in r]
        out.append(line)
    return out


def tables(lines: list[dict], rows: list[dict]):
    """The side-by-side table; with --profile, where each pair's step time went."""
    from rich.table import Table

    compare = Table("config", *(f"{side} tok/s · MFU · peak" for side in ("ours", "plain", "trl")),
                    "ours/plain", "ours/trl", f"ours / ours {lines[0]['config'] if lines else ''}",
                    "compile s · graphs in timed steps", title="tokens/s and MFU")

    def cell(r):
        if not r:
            return "-"
        mfu = f"{100 * r['mfu']:.1f} %" if r["mfu"] is not None else "-"
        return f"{r['tokens_per_s']:,} · {mfu} · {r['peak_mem_gib'] if r['peak_mem_gib'] is not None else '-'} GiB"

    for line in lines:
        compiled = ", ".join(f"{s} {line[s]['compile_s']} · {line[s]['graphs_in_timed_steps']}"
                             for s in ("ours", "plain", "trl") if line.get(s)) \
            if parse_config(line["config"]).compile_mode else ""
        compare.add_row(line["config"], *(cell(line.get(s)) for s in ("ours", "plain", "trl")),
                        *(str(line.get(k, "-")) for k in ("ours_over_plain", "ours_over_trl", "ours_over_first_ours")),
                        compiled)
    out = [compare]
    profiles = [r for r in rows if "profile" in r and "error" not in r["profile"]]
    if profiles:
        labels = list(dict.fromkeys(k for r in profiles for k in r["profile"]["ms_by_category"]))
        where = Table("config", "side", "step ms", "busy ms", "idle", "kernels", *labels,
                      "matmul · attention TFLOP/s", "busiest",
                      title=f"where a step goes (ms per step, {profiles[0]['profile']['source']})")
        for r in profiles:
            pr = r["profile"]
            top = pr["top"][0] if pr["top"] else {"name": "-", "ms": 0}
            where.add_row(r["config"], r["side"], str(pr["step_ms"]), str(pr["busy_ms"]),
                          f"{100 * pr['idle_share']:.0f} %", f"{pr['kernels']:,}",
                          *(str(pr["ms_by_category"].get(k, 0)) for k in labels),
                          " · ".join(str(pr["tflops_per_s"].get(k, "-")) for k in ("matmul", "attention")),
                          f"{top['name'][:40]} {top['ms']}")
        out.append(where)
    return out


def run_pair(command: list[str], env: dict, timeout: int) -> tuple[str, str | None]:
    """(stdout, stderr) of one pair's process; stderr None when it ran out of time. A timeout kills the process
    and all its descendants: torchrun's worker (+fsdp) runs in a session of its own, and it and inductor's
    compile workers would otherwise outlive it, hold its output open and keep their GPU memory from the pairs
    after."""
    import psutil  # Accelerate's own dependency

    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            return process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in [*psutil.Process(process.pid).children(recursive=True), process]:
                p.kill()
            return process.communicate()[0], None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="qwen2.5-0.5b", choices=sorted(SHAPES))
    parser.add_argument("--seq", type=int, default=8192, help="tokens per packed sequence")
    parser.add_argument("--batch", type=int, default=1, help="packed sequences per step")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--examples", type=int, default=120,
                        help="synthetic examples to pack, for each packed sequence of a step")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help="comma-separated "
                        "ATTN[+liger|+liger-fce][+compile|+cudagraphs][+fsdp][+batchN][@SIDE[+SIDE]]")
    parser.add_argument("--sides", default="ours,plain,trl")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="N more steps after the timed ones under torch's profiler: where a step's time goes")
    parser.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak, if not an H100/H200/A100")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (CPU smoke tests)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=int, default=180, help="seconds per (config, side) process")
    parser.add_argument("--budget-s", type=int, default=380, help="start no pair after this many seconds")
    parser.add_argument("--one", nargs=2, metavar=("SIDE", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:  # the pair's own process: its error, not a launcher's summary of it, goes in its row
        try:
            row = run_one(*args.one, args)
        except (Exception, SystemExit) as error:  # noqa: BLE001 - reported in the row
            row = {"config": args.one[1], "side": args.one[0], "error": traceback.format_exc()[-1500:]
                   if isinstance(error, Exception) else str(error.code)}
        print("RESULT " + json.dumps(row), flush=True)
        return
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else None
    env = {**os.environ, "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "TOKENIZERS_PARALLELISM": "false"}
    began, rows = time.time(), []
    matrix = []  # (config, its sides): CONFIG@SIDE[+SIDE] runs only those of --sides for that config
    for item in args.configs.split(","):
        config, _, only = item.partition("@")
        fsdp = parse_config(config).fsdp  # a misspelt config stops it here
        matrix.append((config, fsdp, [s for s in args.sides.split(",") if not only or s in only.split("+")]))
    for config, fsdp, sides in matrix:
        for side in sides:
            started = time.time()
            command = [__file__, *sys.argv[1:], "--one", side, config]
            if fsdp:  # one process under the shipped FSDP2 config, as the trainer launches itself with it
                command = ["-m", "accelerate.commands.launch", "--config_file", str(FSDP_CONFIG), "--num_processes",
                           "1", "--num_machines", "1", "--main_process_port", str(free_port()), *command]
            if started - began > args.budget_s:
                row = {"config": config, "side": side, "error": f"skipped: past the {args.budget_s} s budget"}
            elif fsdp and side == "plain":
                row = {"config": config, "side": side, "error": "+fsdp: ours and TRL only (plain has no Accelerate)"}
            else:
                stdout, stderr = run_pair([sys.executable, *command], env, args.timeout)
                lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
                row = json.loads(lines[-1][7:]) if lines else {
                    "config": config, "side": side,
                    "error": f"timed out after {args.timeout} s" if stderr is None else (stderr or stdout)[-1500:]}
            row["process_s"] = round(time.time() - started, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if out:
                with (out / "gpu_mfu.jsonl").open("a") as f:
                    f.write(json.dumps(row) + "\n")
    lines = summary(rows)
    if out:
        (out / "gpu_mfu_summary.json").write_text(json.dumps(lines, indent=1))
    print(f"\n{args.shape}, {args.seq} tokens x {args.batch} per step, {args.steps} timed steps; "
          f"{round(time.time() - began)} s in all")
    from rich.console import Console

    console = Console(width=240)  # the device tool and CI capture it: no terminal to size it by
    for t in tables(lines, rows):
        console.print(t)


if __name__ == "__main__":
    main()
