"""Released trace sets run through the same pipeline as a generated pool: the pass-through `released`
teacher (its source's rows already carry the trace) and the `as-is` selector (the set itself, a seeded
random subset when the budget is smaller). The importers live with their baselines: `limo-released`
(nt_limo), `s1k-released` (nt_s1k), `openthoughts-released` (nt_openthoughts)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa

import nt_harness
from nt_harness.components import Selector, Settings, Teacher
from nt_harness.records import TRACES, trace_id
from nt_harness.recipes import SpecError
from nt_harness.selection import Decisions, column


class ReleasedTeacher(Teacher):
    name = "released"
    version = "1"
    description = "no generation: passes through the traces a released-dataset source carries"

    def generate(self, questions: pa.Table, ctx) -> pa.Table:
        missing = [c for c in ("thinking", "answer") if c not in questions.column_names]
        if missing:
            raise SpecError(f"teacher `released` needs a source whose rows carry traces (columns thinking, answer), "
                            f"e.g. limo-released, s1k-released, openthoughts-released; this one has no "
                            f"{', '.join(missing)}")
        seen: dict[str, int] = {}
        samples = []
        for qid in questions.column("question_id").to_pylist():
            samples.append(seen.get(qid, 0))
            seen[qid] = samples[-1] + 1
        n = questions.num_rows
        qids = questions.column("question_id").to_pylist()
        table = questions
        filled = {
            "trace_id": pa.array(list(map(trace_id, qids, samples)), pa.string()),
            "teacher": pa.array(["released"] * n, pa.string()),
            "sample": pa.array(samples, pa.int32()),
            "complete": pa.array([True] * n, pa.bool_()),  # a released trace is a finished one
            "finish_reason": pa.array(["stop"] * n, pa.string()),
            "prompt_tokens": pa.nulls(n, pa.int32()),  # unknown: the release has no token counts
            "completion_tokens": pa.nulls(n, pa.int32()),
        }
        for name, values in filled.items():
            if name not in table.column_names:
                table = table.append_column(name, values)
        ctx.stats.update(traces=n, questions=len(seen))
        return table.select(TRACES.names + [c for c in table.column_names if c not in TRACES.names])


class AsIsSelector(Selector):
    name = "as-is"
    version = "1"
    description = "every complete trace of the pool (a released set as-is); a seeded random subset over budget"

    class Settings(Settings):
        order: Literal["random", "file"] = "random"  # which traces fill a budget smaller than the set

    def select(self, pool, budget, seed, ctx):
        d = Decisions(pool, default_reason="dropped: over budget")
        complete = column(pool, "complete")
        d.drop(~complete, "dropped: incomplete")
        rows = np.flatnonzero(complete)
        if self.settings.order == "random":
            rows = np.random.default_rng(seed).permutation(rows)
        d.keep(rows, "kept: released example", budget)
        ctx.stats["available"] = int(len(rows))
        return d.table()


@nt_harness.hookimpl
def register_teachers(register):
    register(ReleasedTeacher)


@nt_harness.hookimpl
def register_selectors(register):
    register(AsIsSelector)
