"""How good a teacher pool the embedded default can make: per prompt format and reasoning-gym family, the share
of SmolLM2-135M-Instruct's sampled traces that are fully correct, how many questions have both right and
wrong traces (what a selector can choose between), and what each costs. Prints one table per format and a
summary, then one JSON line of every figure.

    python benchmarks/embedded_pool.py                                   # the candidate families, ~25 min
    python benchmarks/embedded_pool.py --families chain_sum,lcm --per-family 8 --formats think-64,direct

Each (format, family) runs the real `hf` teacher on questions the `gym` source draws (seed 1: not the embedded
pool's seed 0, and never the held-out seeds) and scores them with the source's own verifier (the `verify`
annotator's rule: the <answer> tag's content, reasoning-gym's score_answer, 1.0 = fully correct).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from nt_harness.components import Context
from nt_harness.models import ModelResolver
from nt_harness.plugins import Plugins
from nt_harness.progress import Progress
from nt_gym import GymSource
from nt_gym.families import category
from nt_hf.teacher import HFTeacher

# Families with short questions (< ~110 prompt tokens: training and prefill cost scale with them) whose
# answers a 135M model can produce, over seven gym categories.
CANDIDATES = ("chain_sum", "basic_arithmetic", "lcm", "gcd", "aiw", "number_sequence", "letter_counting", "ransom_note",
              "syllogism", "course_schedule", "circuit_logic", "mahjong_puzzle", "maze", "leg_counting")

# Teacher settings per format. free-N: no system prompt, no prefill: the model answers as it likes in up to N
# tokens; the whole response is the trace's thinking and its answer is the gym source's (flexible) reading of the
# response, in <answer> tags. forced-N: the same response, then "\n<answer>" forced and the answer sampled after it
# (s1's budget forcing, also at EOS). think-N: a system prompt asking for <think>/<answer> tags, the <think> prefill,
# the answer forced at the cap. direct: the answer tag prefilled, no reasoning. @T: sampling temperature T.
FREE = {"system_prompt": None, "prefill": "", "force_answer": None, "answer_from": "source"}
FORCED = {"system_prompt": None, "prefill": "", "force_answer": "\n<answer>", "budget_forcing": True,
          "answer_max_tokens": 16}
FORMATS = {
    **{f"free-{n}": {**FREE, "max_new_tokens": n} for n in (48, 64, 96)},
    "forced-64": {**FORCED, "max_new_tokens": 64},
    "think-64": {"prefill": "<think>\n", "budget_forcing": True, "answer_max_tokens": 16, "max_new_tokens": 64},
    "direct": {"system_prompt": None, "prefill": "<answer>", "force_answer": None, "max_new_tokens": 24},
}


def measure(model: str, family: str, fmt: str, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        source = GymSource(families=[family], per_family=args.per_family, difficulty=args.difficulty, seed=1)
        ctx = Context(out=Path(tmp) / "out", scratch=Path(tmp) / "scratch", workdir=Path(tmp), threads=args.threads,
                      resolve_model=lambda spec: model, progress=Progress(disable=True), source=source)
        questions = source.load(ctx)
        name, _, temperature = fmt.partition("@")
        teacher = HFTeacher(model="smollm2", n=args.n, batch_size=args.batch_size, top_p=0.95, top_k=50,
                            temperature=float(temperature or 0.7), **FORMATS[name])
        started = time.perf_counter()
        traces = teacher.generate(questions, ctx)
        seconds = time.perf_counter() - started
    scores = source.score(traces, traces.column("answer").to_pylist())
    right: dict[str, list[bool]] = {}
    for qid, score in zip(traces.column("question_id").to_pylist(), scores):
        right.setdefault(qid, []).append(score >= 1.0)
    return {
        "format": fmt, "family": family, "category": category(family), "traces": traces.num_rows,
        "correct": round(sum(s >= 1.0 for s in scores) / len(scores), 3),
        "pass_at_n": round(sum(any(r) for r in right.values()) / len(right), 3),
        "mixed": round(sum(any(r) and not all(r) for r in right.values()) / len(right), 3),
        "complete": round(sum(traces.column("complete").to_pylist()) / traces.num_rows, 3),
        "prompt_tokens": round(statistics.mean(traces.column("prompt_tokens").to_pylist())),
        "completion_tokens": round(statistics.mean(traces.column("completion_tokens").to_pylist())),
        "seconds": round(seconds, 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(CANDIDATES))
    parser.add_argument("--formats", default="free-48,free-64,free-96,free-64@0.5,forced-64,think-64,direct",
                        help=f"of {', '.join(FORMATS)}, each optionally @TEMPERATURE (default 0.7)")
    parser.add_argument("--per-family", type=int, default=12)
    parser.add_argument("--n", type=int, default=4, help="samples per question")
    parser.add_argument("--difficulty", default="tiny")
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", default=".nt-harness", help="where the smollm2 alias is built")
    args = parser.parse_args()

    model = ModelResolver(Plugins().models, Path(args.workdir) / "models").resolve("smollm2")
    rows = []
    for fmt in args.formats.split(","):
        print(f"\n{fmt}: {FORMATS[fmt.partition('@')[0]]}")
        print(f"{'family':22} {'category':12} {'correct':>7} {'pass@n':>7} {'mixed':>6} {'complete':>8} "
              f"{'prompt':>6} {'gen':>4} {'s':>6}")
        for family in args.families.split(","):
            r = measure(model, family, fmt, args)
            rows.append(r)
            print(f"{family:22} {r['category']:12} {r['correct']:7.3f} {r['pass_at_n']:7.3f} {r['mixed']:6.3f} "
                  f"{r['complete']:8.3f} {r['prompt_tokens']:6d} {r['completion_tokens']:4d} {r['seconds']:6.1f}",
                  flush=True)
    print("\nformat: mean correct over families (traces)")
    for fmt in args.formats.split(","):
        mine = [r for r in rows if r["format"] == fmt]
        print(f"  {fmt:18} {statistics.mean(r['correct'] for r in mine):.3f}")
    print(json.dumps({"per_family": args.per_family, "n": args.n, "difficulty": args.difficulty, "rows": rows}))


if __name__ == "__main__":
    main()
