"""How much training the embedded default's student needs: the held-out score of one recipe's selection trained
at several learning rates and epoch counts, against optimizer steps, beside the untrained student, in one run.
Prints a table (strict and flexible exact match, no-answer share, the paired test against the base student),
then one JSON line.

    python benchmarks/embedded_training.py                                   # ~25 min on 2 cores, cold
    python benchmarks/embedded_training.py --recipe random --lrs 2e-5,1e-4 --epochs 1,3

Runs the real pipeline on a store of its own (--workdir): the pool, annotations and selection are built once and
shared by every row; each row is a train and an evaluate stage. With a constant learning rate and the same
shuffles, fewer epochs are the first steps of more, so each lr's rows are its curve.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nt_harness.cli import make_spec
from nt_harness.pipeline import Pipeline
from nt_harness.plugins import Plugins
from nt_harness.progress import Progress
from nt_harness.stats import paired_test
from nt_harness.store import Store

METRICS = ("exact_match,flexible", "exact_match,strict", "no_answer,flexible")


def scores(run, task: str) -> dict:
    values = run.per_question.get(task, {})
    return {m: values[m] for m in METRICS if m in values}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="naturalthoughts")
    parser.add_argument("--lrs", default="2e-5,5e-5,1e-4")
    parser.add_argument("--epochs", default="1,2,3,5")
    parser.add_argument("--task", default="gym_heldout")
    parser.add_argument("--workdir", default=".nt-harness-training")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], help="any setting, as nt-harness --set")
    args = parser.parse_args()

    pm = Plugins()
    spec = make_spec(pm, pm.recipe(args.recipe), {"profile": "embedded", "set": args.set}, None)
    rows = []
    store = Store(args.workdir)
    with store.locked(), Progress() as progress:
        pipe = Pipeline(pm, store, progress, threads=args.threads)
        base = scores(pipe.baseline(spec), args.task)
        rows.append({"lr": 0.0, "epochs": 0, "steps": 0, **{m: sum(v.values()) / len(v) for m, v in base.items()}})
        for lr in (float(x) for x in args.lrs.split(",")):
            for epochs in (int(x) for x in args.epochs.split(",")):
                run_spec = spec.model_copy(update={"trainer": {**spec.trainer, "lr": lr, "epochs": epochs}})
                run = pipe.run(args.recipe, run_spec)
                got = scores(run, args.task)
                trained = store.get("train", run_spec.trainer["name"], run.stages["train"])
                test = paired_test(base[METRICS[0]], got[METRICS[0]])
                rows.append({"lr": lr, "epochs": epochs, "steps": trained.manifest["stats"]["steps"],
                             **{m: sum(v.values()) / len(v) for m, v in got.items()},
                             "diff_vs_base": test["diff"], "p_vs_base": test["p"]})
    print(f"{args.recipe}, budget {spec.budget}, batch {spec.trainer.get('batch_size')}, "
          f"{len(base[METRICS[0]])} held-out questions")
    print(f"{'lr':>7} {'epochs':>6} {'steps':>5} {'flexible':>8} {'strict':>7} {'no ans':>6} {'Δ base':>7} {'p':>7}")
    for r in rows:
        print(f"{r['lr']:7.0e} {r['epochs']:6d} {r['steps']:5d} {r.get(METRICS[0], 0):8.3f} {r.get(METRICS[1], 0):7.3f} "
              f"{r.get(METRICS[2], 0):6.3f} {r.get('diff_vs_base', 0):+7.3f} {r.get('p_vs_base', 1):7.2g}")
    print(json.dumps({"recipe": args.recipe, "budget": spec.budget, "rows": rows}))


if __name__ == "__main__":
    main()
