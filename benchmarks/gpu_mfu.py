"""Training tokens/s and MFU on a GPU: the `sft` trainer's step against TRL's SFTTrainer and a plain
transformers loop, on a random-init model of a real shape and packed sequences of reasoning-trace lengths.

    python benchmarks/gpu_mfu.py                                  # Qwen2.5-0.5B shape, 8k packs, sdpa + flex
    python benchmarks/gpu_mfu.py --shape tiny --seq 512 --steps 2 --warmup 1   # a CPU smoke test

Self-contained for a bare GPU box: needs torch, transformers and accelerate; TRL (and its `datasets`) only
for the TRL side, which is reported as skipped when they are missing. nt-harness itself is not imported:
the `sft` trainer's step functions are loaded from plugins/nt_sft/steps.py by path. Each (side, attention)
pair runs in its own process, so one failing or running out of memory does not stop the others. One JSON
line per pair on stdout (and in $OUT/gpu_mfu.jsonl when $OUT is set).

MFU counts the model FLOPs of the real (non-padding) tokens: 6 × parameters per token (the tied embedding
counted once, as the output head) plus causal attention 6 × layers × hidden × (each token's own context
within its example), so packing is not credited with attention it rightly skips.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

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


def load_steps():
    """plugins/nt_sft/steps.py as a module, without importing nt_sft (whose package imports nt-harness)."""
    path = Path(__file__).resolve().parents[1] / "plugins" / "nt_sft" / "steps.py"
    spec = importlib.util.spec_from_file_location("nt_sft_steps", path)
    module = importlib.util.module_from_spec(spec)
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
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn, dtype=torch.float32)
    return model.to(device), config  # fp32 master weights; bf16 autocast in the step


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def work(lengths: list[int]) -> tuple[int, int]:
    """(real tokens, Σ over them of the tokens each attends to) for examples of these lengths."""
    return sum(lengths), sum(n * (n + 1) // 2 for n in lengths)


def run_one(side: str, attn: str, args) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(args.threads)
    steps_mod = load_steps()
    examples = synthetic_examples(args.examples, SHAPES[args.shape]["vocab_size"], args.seq, args.seed)
    lengths = [len(e["input_ids"]) for e in examples]
    packs = [[examples[i] for i in p] for p in steps_mod.pack_examples(lengths, args.seq)]
    one_row = attn.startswith("flash")
    chunks = [packs[i : i + args.batch] for i in range(0, len(packs), args.batch)]
    needed = args.warmup + args.steps
    if len(chunks) < needed:
        raise SystemExit(f"{len(chunks)} batches of packs for {needed} steps: raise --examples")
    chunks = chunks[:needed]
    batches = [steps_mod.pack_batch(chunk, 0, one_row) for chunk in chunks]

    model, config = build_model(args.shape, args.seq, attn, device)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    leak = packing_leak(model, packs[0], device) if side == "ours" else None
    model.train()
    n_params = count_params(model)
    if side == "ours":
        seconds, losses = run_ours(steps_mod, model, batches, args)
    elif side == "plain":
        seconds, losses = run_plain(model, batches, args, device)
    elif side == "trl":
        seconds, losses, timed_lengths = run_trl(model, examples, args, device)
    else:
        raise SystemExit(f"unknown side {side}")
    if side != "trl":  # TRL packs by itself (also best-fit decreasing): its timed steps hold other examples
        timed_lengths = [len(e["input_ids"]) for chunk in chunks[args.warmup:] for pack in chunk for e in pack]
        computed = sum(b["input_ids"].numel() for b in batches[args.warmup:])
    else:
        computed = sum(timed_lengths)  # padding-free: one row of examples end to end
    real, contexts = work(timed_lengths)
    tokens_per_s = real / seconds
    flops = 6 * n_params * real + 6 * config.num_hidden_layers * config.hidden_size * contexts
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    peak = args.peak_tflops * 1e12 if args.peak_tflops else next((v for k, v in PEAK_BF16.items() if k in name), None)
    return {
        "side": side, "attn": attn, "shape": args.shape, "seq": args.seq, "batch": args.batch, "device": name,
        "torch": torch.__version__, "params": n_params, "gradient_checkpointing": args.gradient_checkpointing,
        "timed_steps": args.steps, "real_tokens": real, "packing_efficiency": round(real / computed, 4),
        "tokens_per_s": round(tokens_per_s), "tflops_per_s": round(flops / seconds / 1e12, 2),
        "mfu": round(flops / seconds / peak, 4) if peak else None,
        "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None,
        "losses": [round(x, 4) for x in losses],
        "packed_vs_alone_max_abs_diff": leak,
    }


def packing_leak(model, pack: list[dict], device: str) -> float:
    """Largest difference between an example's last hidden states alone and packed after the others (fp32):
    ~1e-5 means no attention crosses examples with this attention implementation; O(1) means it does."""
    ids = [torch.tensor(e["input_ids"][:1024], device=device) for e in pack]  # a prefix keeps this cheap
    row = torch.cat(ids)[None]
    positions = torch.cat([torch.arange(len(t), device=device) for t in ids])[None]
    model.eval()
    with torch.no_grad():
        packed = model.model(input_ids=row, position_ids=positions, use_cache=False).last_hidden_state[0]
        alone = model.model(input_ids=ids[-1][None], use_cache=False).last_hidden_state[0]
    model.train()
    return float((packed[-len(ids[-1]):] - alone).abs().max())


def synchronize():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_ours(steps_mod, model, batches, args) -> tuple[float, list[float]]:
    """The `sft` trainer's own step: Accelerate, token-normalised backward, clipping, fused AdamW, schedule."""
    from types import SimpleNamespace

    settings = SimpleNamespace(lr=2e-5, weight_decay=0.1, adam_beta2=0.999, warmup_ratio=0.0, schedule="constant",
                               min_lr_ratio=0.1)
    accelerator = steps_mod.make_accelerator("bf16")
    optimizer = steps_mod.build_optimizer(model, settings, fused=accelerator.device.type == "cuda")
    schedule = steps_mod.build_schedule(optimizer, settings, len(batches))
    model, optimizer, schedule = accelerator.prepare(model, optimizer, schedule)
    seconds, losses = 0.0, []
    for i, batch in enumerate(batches):
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        synchronize()
        started = time.perf_counter()
        step = steps_mod.optimizer_step(accelerator, model, optimizer, schedule, [batch], 1.0)
        synchronize()
        if i >= args.warmup:
            seconds += time.perf_counter() - started
        losses.append(step["loss"])
    return seconds, losses


def run_plain(model, batches, args, device) -> tuple[float, list[float]]:
    """The reference: transformers' own loss, torch autocast, fused AdamW, nothing else."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.1, fused=device == "cuda")
    seconds, losses = 0.0, []
    for i, batch in enumerate(batches):
        inputs = {k: batch[k].to(device) for k in ("input_ids", "position_ids", "labels")} | {"use_cache": False}
        synchronize()
        started = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize()
        if i >= args.warmup:
            seconds += time.perf_counter() - started
        losses.append(loss.item())
    return seconds, losses


def run_trl(model, examples, args, device) -> tuple[float, list[float], list[int]]:
    """TRL's SFTTrainer on the same examples, already tokenized: its best-fit-decreasing packing, padding-free."""
    from datasets import Dataset
    from transformers import PreTrainedTokenizerFast, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    dataset = Dataset.from_dict({
        "input_ids": [e["input_ids"] for e in examples],
        "completion_mask": [[int(t != -100) for t in e["labels"]] for e in examples],
    })
    warmup = args.warmup

    class StepClock(TrainerCallback):
        def __init__(self):
            self.seconds, self.started, self.step = 0.0, 0.0, 0

        def on_step_begin(self, *unused, **unused_kw):
            synchronize()
            self.started = time.perf_counter()

        def on_step_end(self, *unused, **unused_kw):
            synchronize()
            if self.step >= warmup:
                self.seconds += time.perf_counter() - self.started
            self.step += 1

    from tokenizers import Tokenizer, models

    # TRL wants a tokenizer for its pad token only: the data are ids already
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<pad>": 0, "<eos>": 1}, "<pad>")),
                                        pad_token="<pad>", eos_token="<eos>")
    clock = StepClock()
    config = SFTConfig(
        output_dir=os.environ.get("TMPDIR", "/tmp") + "/gpu-mfu-trl", per_device_train_batch_size=args.batch,
        max_steps=args.warmup + args.steps, learning_rate=2e-5, lr_scheduler_type="constant", weight_decay=0.1,
        max_grad_norm=1.0, optim="adamw_torch_fused" if device == "cuda" else "adamw_torch",
        max_length=args.seq, packing=True, completion_only_loss=True, bf16=True, use_cpu=device == "cpu",
        gradient_checkpointing=args.gradient_checkpointing, logging_steps=1, report_to="none", save_strategy="no",
        dataloader_num_workers=0, disable_tqdm=True, seed=args.seed,
    )
    seen: list[list[int]] = []

    class Recording(SFTTrainer):
        """Notes each step's example lengths (from the position ids TRL's padding-free packing makes)."""

        def training_step(self, model, inputs, *rest, **kw):
            starts = (inputs["position_ids"].flatten() == 0).nonzero().flatten().tolist()
            seen.append([b - a for a, b in zip(starts, starts[1:] + [inputs["position_ids"].numel()])])
            return super().training_step(model, inputs, *rest, **kw)

    trainer = Recording(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                        callbacks=[clock])
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return clock.seconds, losses, [n for step in seen[warmup:] for n in step]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="qwen2.5-0.5b", choices=sorted(SHAPES))
    parser.add_argument("--seq", type=int, default=8192, help="tokens per packed sequence")
    parser.add_argument("--batch", type=int, default=1, help="packed sequences per step")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--examples", type=int, default=200, help="synthetic examples to pack")
    parser.add_argument("--sides", default="ours,trl,plain")
    parser.add_argument("--attn", default="sdpa,flex_attention", help="attention implementations to compare")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak, if not an H100/H200/A100")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (CPU smoke tests)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=int, default=300, help="seconds per (side, attention) process")
    parser.add_argument("--one", nargs=2, metavar=("SIDE", "ATTN"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        print("RESULT " + json.dumps(run_one(*args.one, args)), flush=True)
        return
    out = Path(os.environ["OUT"]) / "gpu_mfu.jsonl" if os.environ.get("OUT") else None
    passthrough = [a for a in sys.argv[1:]]
    for attn in args.attn.split(","):
        for side in args.sides.split(","):
            started = time.time()
            try:
                done = subprocess.run([sys.executable, __file__, *passthrough, "--one", side, attn],
                                      capture_output=True, text=True, timeout=args.timeout)
                lines = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
                row = json.loads(lines[-1][7:]) if lines else {
                    "side": side, "attn": attn, "error": (done.stderr or done.stdout)[-1500:]}
            except subprocess.TimeoutExpired:
                row = {"side": side, "attn": attn, "error": f"timed out after {args.timeout} s"}
            row["process_s"] = round(time.time() - started, 1)
            print(json.dumps(row), flush=True)
            if out:
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
