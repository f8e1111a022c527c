"""Selection at paper scale: every selector on a synthetic annotated pool of 1M traces, against a
straightforward pandas implementation of the same rule, in one run. Prints seconds, the ratio and the
peak memory each call added (resident set, /proc/self VmHWM reset before each call).

    python benchmarks/selection_scale.py                      # 1M traces, budget 100k
    python benchmarks/selection_scale.py --traces 200000 --budget 20000 --only long,topic-uniform

The pool holds only the columns selectors read (no trace text): selection memory should scale with those
columns, not with the traces. Targets on 2 cores: random, long, disagree, verbosity under 10 s;
cluster-uniform (embeddings given) under 60 s.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from nt_harness.components import Context
from nt_modelfree.selectors import RandomSelector
from nt_naturalthoughts.selectors import (
    LONG_EXPONENT,
    LONG_SCALE_TOKENS,
    ClusterUniformSelector,
    ComposeSelector,
    DisagreeSelector,
    LongSelector,
    ShortReferenceSelector,
    StrategyDiverseSelector,
    TopicUniformSelector,
    VerbositySelector,
)

# the 13 top-level domains of NaturalThoughts §3.1, with a skewed share each (the paper notes topics are
# "too concentrated among a small set of topics", §5.1)
TOPICS = ["Science", "Engineering", "Medicine", "Economics", "Management", "Law", "Philosophy", "History",
          "Education", "Literature and Arts", "Agronomy", "Sociology", "Military Science"]
REFERENCES = ["42", "x = 3", "True", "", "3.14", "an answer that explains itself over several clauses and words",
              "The second law of thermodynamics", "O(n log n)"]


def synthetic_pool(n: int, per_question: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    q = np.arange(n) // per_question
    nq = q.max() + 1
    share = 1 / np.arange(1, len(TOPICS) + 1)
    topic_of_q = rng.choice(len(TOPICS), nq, p=share / share.sum())
    return pa.table({
        "trace_id": [f"q{a}/{b}" for a, b in zip(q.tolist(), (np.arange(n) % per_question).tolist())],
        "question_id": pa.array([f"q{a}" for a in range(nq)]).take(pa.array(q)),
        "reference": pa.array(REFERENCES).take(pa.array(rng.integers(0, len(REFERENCES), nq)[q])),
        "topic": pa.array(TOPICS).take(pa.array(topic_of_q[q])),
        "complete": rng.random(n) < 0.95,
        "thinking_tokens": np.minimum(rng.lognormal(7.5, 0.8, n), 16384).astype(np.int32),
        "cluster": rng.integers(0, 100, nq)[q].astype(np.int32),
        "verbosity": rng.integers(0, 11, n).astype(np.int8),
        "strategy_count": rng.integers(0, 13, n).astype(np.int8),
        "strategy_density": rng.gamma(2.0, 1.5, n),
        "correct": (rng.random(n) < 0.7).astype(np.float64),
        "system1_correct": (rng.random(nq) < 0.5).astype(np.float64)[q],
    })


# the same rules, written the obvious pandas way --------------------------------------------------------------
def _finish(df, chosen_index, reason, budget, rng, fill=True):
    chosen = list(chosen_index[:budget])
    if fill and len(chosen) < budget:
        taken = set(df.loc[chosen, "question_id"])
        rest = df[df.complete & ~df.question_id.isin(taken)].sample(frac=1, random_state=rng)
        chosen += list(rest.drop_duplicates("question_id").index[: budget - len(chosen)])
    out = pd.DataFrame({"trace_id": df.trace_id, "kept": df.index.isin(chosen)})
    out["reason"] = np.where(out.kept, "kept", reason)
    return out


def _one_per_question_shuffled(part, rng):
    return part.sample(frac=1, random_state=rng).drop_duplicates("question_id").index


def pd_random(df, budget, rng):
    return _finish(df, _one_per_question_shuffled(df[df.complete], rng), "dropped", budget, rng, fill=False)


def pd_disagree(df, budget, rng):
    part = df[df.complete & (df.correct >= 1) & (df.system1_correct < 1)]
    return _finish(df, _one_per_question_shuffled(part, rng), "dropped: models agree", budget, rng)


def pd_long(df, budget, rng):
    p = np.minimum(1.0, (df.thinking_tokens / LONG_SCALE_TOKENS) ** LONG_EXPONENT)
    accepted = df[df.complete & (rng.random(len(df)) < p)]
    chosen = list(_one_per_question_shuffled(accepted, rng)[:budget])
    if len(chosen) < budget:  # length-weighted fill
        rest = df[df.complete & ~df.question_id.isin(set(df.loc[chosen, "question_id"]))]
        weights = p[rest.index] + 1e-12
        fill = rest.sample(n=min(len(rest), 2 * (budget - len(chosen))), weights=weights, random_state=rng)
        chosen += list(fill.drop_duplicates("question_id").index[: budget - len(chosen)])
    return _finish(df, pd.Index(chosen), "dropped: not sampled by length", budget, rng, fill=False)


def pd_uniform_over(column):
    def rule(df, budget, rng):
        cand = df.loc[_one_per_question_shuffled(df[df.complete], rng)]
        turn = cand.groupby(column).cumcount()
        group_rank = cand[column].map(dict(zip(cand[column].unique(), rng.permutation(cand[column].nunique()))))
        order = pd.DataFrame({"turn": turn, "g": group_rank}).sort_values(["turn", "g"]).index
        return _finish(df, order, "dropped: not chosen", budget, rng, fill=False)
    return rule


def pd_verbosity(df, budget, rng):
    part = df[df.complete & (df.verbosity >= 7)]
    return _finish(df, _one_per_question_shuffled(part, rng), "dropped: verbosity not high", budget, rng)


def pd_short_reference(df, budget, rng):
    length = df.reference.str.strip().str.len()
    part = df[df.complete & (length > 0) & (length <= 32)]
    return _finish(df, _one_per_question_shuffled(part, rng), "dropped: reference", budget, rng)


def pd_strategy(df, budget, rng):
    in_range = df.complete & df.strategy_count.between(4, 8)
    threshold = df.strategy_density[in_range].quantile(0.25)
    low = in_range & (df.strategy_density < threshold)
    keep = in_range & ~(low & (rng.random(len(df)) >= 0.5))
    return _finish(df, _one_per_question_shuffled(df[keep], rng), "dropped: strategies", budget, rng)


def pd_compose_disagree_long(df, budget, rng):
    part = df[df.complete & (df.correct >= 1) & (df.system1_correct < 1)]
    part = part.loc[_one_per_question_shuffled(part, rng)]
    p = np.minimum(1.0, (part.thinking_tokens / LONG_SCALE_TOKENS) ** LONG_EXPONENT)
    accepted = part[rng.random(len(part)) < p]
    return _finish(df, accepted.sample(frac=1, random_state=rng).index, "dropped", budget, rng)


CASES = {
    "random": (RandomSelector(), pd_random),
    "disagree": (DisagreeSelector(), pd_disagree),
    "long": (LongSelector(), pd_long),
    "topic-uniform": (TopicUniformSelector(), pd_uniform_over("topic")),
    "cluster-uniform": (ClusterUniformSelector(), pd_uniform_over("cluster")),
    "verbosity": (VerbositySelector(level="high"), pd_verbosity),
    "short-reference": (ShortReferenceSelector(), pd_short_reference),
    "strategy-diverse": (StrategyDiverseSelector(), pd_strategy),
    "compose(disagree>long)": (None, pd_compose_disagree_long),
}


# measuring ---------------------------------------------------------------------------------------------------
def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def measured(fn):
    """(result, seconds, peak resident bytes the call added above what was resident before it)."""
    gc.collect()
    before = _status("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass
    t = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t
    return result, seconds, max(_status("VmHWM") - before, 0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=1_000_000)
    parser.add_argument("--per-question", type=int, default=2)
    parser.add_argument("--budget", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="comma-separated case names")
    args = parser.parse_args()
    CASES["compose(disagree>long)"] = (ComposeSelector(steps=[{"name": "disagree"}, {"name": "long"}]),
                                       pd_compose_disagree_long)
    t = time.perf_counter()
    pool = synthetic_pool(args.traces, args.per_question, args.seed)
    df = pool.to_pandas()
    print(f"pool: {pool.num_rows:,} traces, {pool.nbytes / 2**20:.0f} MiB of columns, built in "
          f"{time.perf_counter() - t:.1f} s; budget {args.budget:,}")
    print(f"{'selector':<24}{'nt-harness s':>13}{'pandas s':>10}{'ratio':>8}{'nt MiB':>9}{'pandas MiB':>11}  kept")
    rows = []
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    for name, (selector, rule) in CASES.items():
        if only and name not in only:
            continue
        ctx = Context(out=Path("."), scratch=Path("."), workdir=Path("."))
        sel, ours, ours_mem = measured(lambda: selector.select(pool, args.budget, args.seed, ctx))
        ref, theirs, theirs_mem = measured(lambda: rule(df, args.budget, np.random.default_rng(args.seed)))
        kept = int(np.asarray(sel.column("kept")).sum())
        row = {"selector": name, "seconds": round(ours, 2), "pandas_seconds": round(theirs, 2),
               "ratio": round(theirs / ours, 2), "peak_mib": round(ours_mem / 2**20), "pandas_peak_mib":
               round(theirs_mem / 2**20), "kept": kept, "pandas_kept": int(ref.kept.sum())}
        rows.append(row)
        print(f"{name:<24}{ours:>13.2f}{theirs:>10.2f}{theirs / ours:>8.1f}{ours_mem / 2**20:>9.0f}"
              f"{theirs_mem / 2**20:>11.0f}  {kept:,}", flush=True)
    print(json.dumps({"traces": args.traces, "budget": args.budget,
                      "results": rows}))


if __name__ == "__main__":
    main()
