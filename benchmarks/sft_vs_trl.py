"""Tokens/s of the `sft` trainer against TRL's SFTTrainer, both in this one run, on the same model, data,
order, sequence lengths, batch and optimizer; prints one JSON line with both loss curves side by side.

    python benchmarks/sft_vs_trl.py --threads 1                      # SmolLM2-135M, 32 examples, batch 4
    python benchmarks/sft_vs_trl.py --model tiny-llama --examples 64  # seconds
    python benchmarks/sft_vs_trl.py --repeats 2                      # ABBA order, best of each side

Both sides see the examples in the same order (TRL is given the sampler the `sft` trainer uses) and the
same tokens (checked: the script reports whether TRL's tokenization equals ours). Tokens/s counts the
non-padding tokens through the model per second of optimizer steps (TRL: on_step_begin..on_step_end),
so model loading and saving are out of both figures; whole-call wall times are reported beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sft_throughput import arithmetic_examples  # noqa: E402  (the same reasoning-shaped examples)

from nt_harness.components import Context  # noqa: E402
from nt_sft.trainer import EpochShuffle, SFTTrainer, assistant_turn, encode_example, stop_token_ids  # noqa: E402


def model_folder(spec: str) -> str:
    from nt_harness.models import ModelResolver
    from nt_harness.plugins import Plugins

    cache = Path(os.environ.get("NT_HARNESS_WORKDIR", ".nt-harness")) / "models"
    return ModelResolver(Plugins().models, cache).resolve(spec)


def run_ours(examples, folder: str, args) -> dict:
    work = Path(tempfile.mkdtemp(prefix="sft-vs-trl-ours-"))
    ctx = Context(out=work / "out", scratch=work / "scratch", workdir=work, threads=args.threads)
    ctx.out.mkdir()
    ctx.scratch.mkdir()
    trainer = SFTTrainer(epochs=1, batch_size=args.batch_size, lr=args.lr, max_length=args.max_length,
                         mixed_precision=args.mixed_precision, seed=args.seed)
    started = time.perf_counter()
    stats = trainer.train(examples, folder, ctx)
    return {"tokens_per_s": stats["tokens_per_s"], "wall_s": round(time.perf_counter() - started, 1),
            "steps": stats["steps"], "loss_curve": [round(x, 4) for x in stats["loss_curve"]]}


def run_trl(examples, folder: str, args) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer as TRLSFTTrainer

    rows = examples.to_pylist()
    dataset = Dataset.from_list([
        {"prompt": [{"role": "user", "content": r["question"]}],
         "completion": [{"role": "assistant", "content": assistant_turn(r["thinking"], r["answer"], r["mode"])}]}
        for r in rows
    ])
    seed = args.seed

    class SameOrder(TRLSFTTrainer):
        """TRL with the `sft` trainer's sampler: the same batches, so the loss curves can be compared."""

        def _get_train_sampler(self, *unused, **unused_kw):
            return EpochShuffle(len(self.train_dataset), seed)

    class StepClock(TrainerCallback):
        def __init__(self):
            self.seconds, self.started = 0.0, 0.0

        def on_step_begin(self, *unused, **unused_kw):
            self.started = time.perf_counter()

        def on_step_end(self, *unused, **unused_kw):
            self.seconds += time.perf_counter() - self.started

    clock = StepClock()
    config = SFTConfig(
        output_dir=tempfile.mkdtemp(prefix="sft-vs-trl-trl-"), per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1, num_train_epochs=1, learning_rate=args.lr, lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=0.1, adam_beta2=0.999, max_grad_norm=1.0, optim="adamw_torch",
        max_length=args.max_length, packing=False, completion_only_loss=True,
        bf16=args.mixed_precision != "no", use_cpu=True, logging_steps=1, report_to="none", save_strategy="no",
        seed=args.seed, data_seed=args.seed, dataloader_num_workers=0, disable_tqdm=True,
    )
    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    trainer = SameOrder(model=model, args=config, train_dataset=dataset,
                        processing_class=AutoTokenizer.from_pretrained(folder), callbacks=[clock])
    trainer.train()
    wall = time.perf_counter() - started
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    return {"tokens_per_s": round(tokens / clock.seconds, 1), "wall_s": round(wall, 1),
            "steps": trainer.state.global_step,
            "loss_curve": [round(e["loss"], 4) for e in trainer.state.log_history if "loss" in e],
            "input_ids": trainer.train_dataset["input_ids"], "targets": trl_targets(trainer.train_dataset)}


def trl_targets(dataset) -> list[list[bool]] | None:
    """Which tokens TRL trains on: its ``labels`` column (TRL 1.x) or ``completion_mask`` (TRL 0.2x)."""
    if "labels" in dataset.column_names:
        return [[t != -100 for t in row] for row in dataset["labels"]]
    if "completion_mask" in dataset.column_names:
        return [[bool(t) for t in row] for row in dataset["completion_mask"]]
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="a model spec: smollm2, tiny-llama or a folder")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--examples", type=int, default=32)
    parser.add_argument("--steps-per-trace", type=int, default=7, help="7 gives ~230-token examples")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=1024, help="long enough that nothing is cut or dropped")
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--mixed-precision", default="bf16", choices=["bf16", "no"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="runs per side, in ABBA order; the best counts")
    args = parser.parse_args()

    import trl
    from transformers import AutoTokenizer

    torch.set_num_threads(args.threads)
    folder = model_folder(args.model)
    examples = arithmetic_examples(args.examples, args.steps_per_trace)

    # ABBA order over the repeats, best of each side: a busy machine slows whichever side it happens to hit
    runs = {"ours": [], "trl": []}
    for r in range(args.repeats):
        for side in (("ours", "trl") if r % 2 == 0 else ("trl", "ours")):
            runs[side].append(run_ours(examples, folder, args) if side == "ours" else run_trl(examples, folder, args))
    ours = max(runs["ours"], key=lambda x: x["tokens_per_s"])
    theirs = dict(max(runs["trl"], key=lambda x: x["tokens_per_s"]))

    tokenizer = AutoTokenizer.from_pretrained(folder)
    stops = stop_token_ids(tokenizer, folder)
    mine = [encode_example(tokenizer, r["question"], assistant_turn(r["thinking"], r["answer"], r["mode"]), None, stops)
            for r in examples.to_pylist()]
    same_tokens = [m["input_ids"] for m in mine] == theirs.pop("input_ids")
    targets = theirs.pop("targets")
    same_targets = targets is not None and [[t != -100 for t in m["labels"]] for m in mine] == targets
    print(json.dumps({
        "model": args.model, "threads": args.threads, "batch_size": args.batch_size, "examples": args.examples,
        "mixed_precision": args.mixed_precision, "trl": trl.__version__, "same_tokens": same_tokens,
        "same_target_tokens": same_targets,
        "ours_tokens_per_s": ours["tokens_per_s"], "trl_tokens_per_s": theirs["tokens_per_s"],
        "ratio_ours_over_trl": round(ours["tokens_per_s"] / theirs["tokens_per_s"], 3),
        "tokens_per_s_each_run": {side: [x["tokens_per_s"] for x in xs] for side, xs in runs.items()},
        "ours_wall_s": ours["wall_s"], "trl_wall_s": theirs["wall_s"], "steps": [ours["steps"], theirs["steps"]],
        "loss_curves": {"ours": ours["loss_curve"], "trl": theirs["loss_curve"]},
        "max_abs_loss_diff": max(abs(a - b) for a, b in zip(ours["loss_curve"], theirs["loss_curve"])),
    }))


if __name__ == "__main__":
    main()
