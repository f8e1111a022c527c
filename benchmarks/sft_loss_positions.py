"""The `sft` step's LM head and loss at target positions only, against transformers' own call over every
position, both in this one run on the same packed row: forward + backward time and the two losses.

    python benchmarks/sft_loss_positions.py --threads 1          # SmolLM2-135M, 8 System-2 and System-1 examples

The head is (vocabulary x hidden) per position; the step computes it, and the cross-entropy, only where the
next token is a target (``steps.loss_positions``), so prompt tokens cost the body only. The anchor is
``model(labels=...)`` with the logits of every position. Repeats alternate the two (ABBA); medians count.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nt_sft.steps import make_accelerator, model_inputs, pack_batch, skip_output_upcast
from nt_sft.trainer import encode_example, stop_token_ids
from sft_throughput import arithmetic_examples
from sft_vs_trl import model_folder


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="a model spec: smollm2, tiny-llama or a folder")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--examples", type=int, default=8, help="examples packed into the one row")
    parser.add_argument("--repeats", type=int, default=6, help="forward + backward passes per side")
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    folder = model_folder(args.model)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    accelerator = make_accelerator("auto")
    model = accelerator.prepare(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32))
    skip_output_upcast(accelerator, model)
    stops = stop_token_ids(tokenizer, folder)
    rows = arithmetic_examples(args.examples, 7).to_pylist()
    responses = {"system2": lambda r: f"<think>\n{r['thinking']}\n</think>\n{r['answer']}",
                 "system1": lambda r: r["answer"]}
    for mode, response in responses.items():
        encoded = [encode_example(tokenizer, r["question"], response(r), None, stops) for r in rows]
        batch = {k: v.to(accelerator.device) if torch.is_tensor(v) else v
                 for k, v in pack_batch([encoded], tokenizer.pad_token_id, one_row=True).items()}
        medians, losses = time_both(model, batch, args.repeats)
        print(json.dumps({
            "model": args.model, "mode": mode, "threads": args.threads, "device": accelerator.device.type,
            "tokens": batch["input_ids"].numel(), "head_positions": len(batch["logits_to_keep"]),
            "median_ms": {name: round(1e3 * m, 1) for name, m in medians.items()},
            "speedup": round(medians["every_position"] / medians["target_positions"], 3),
            "loss": losses,
        }))


def time_both(model, batch: dict, repeats: int) -> tuple[dict, dict]:
    """Median forward + backward seconds of each call, alternating them, and each one's loss."""
    calls = {
        "every_position": {"labels": batch["labels"]},
        "target_positions": {"labels": batch["shift_labels"], "shift_labels": batch["shift_labels"],
                             "logits_to_keep": batch["logits_to_keep"]},
    }
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    losses: dict[str, float] = {}
    for repeat in range(repeats):
        for name in list(calls)[:: 1 if repeat % 2 == 0 else -1]:
            model.zero_grad(set_to_none=True)
            started = time.perf_counter()
            loss = model(**model_inputs(batch), **calls[name], num_items_in_batch=batch["targets"]).loss
            loss.backward()
            seconds[name].append(time.perf_counter() - started)
            losses[name] = round(loss.item(), 6)
    return {name: statistics.median(s) for name, s in seconds.items()}, losses

if __name__ == "__main__":
    main()
