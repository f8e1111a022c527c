"""A small builder for selector output: every trace gets kept/dropped and the reason, in the style of
datatrove's counters and exclusion writer."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nt_harness.records import SELECTION


class Decisions:
    def __init__(self, pool: pa.Table, default_reason: str = "dropped: not chosen"):
        self.ids = pool.column("trace_id").to_numpy(zero_copy_only=False)
        self.kept = np.zeros(len(self.ids), dtype=bool)
        self.rank = np.full(len(self.ids), -1, dtype=np.int32)
        self.reason = np.full(len(self.ids), default_reason, dtype=object)
        self._next = 0

    @property
    def n_kept(self) -> int:
        return int(self.kept.sum())

    def drop(self, mask: np.ndarray, reason: str) -> None:
        """Mark still-undecided rows in ``mask`` as dropped for ``reason``."""
        mask = np.asarray(mask, dtype=bool) & ~self.kept
        self.reason[mask] = reason

    def keep(self, rows, reason: str, budget: int | None = None) -> int:
        """Keep ``rows`` (indices, in order of preference) until ``budget`` examples are kept."""
        taken = 0
        for i in rows:
            if budget is not None and self.n_kept >= budget:
                break
            if self.kept[i]:
                continue
            self.kept[i], self.rank[i], self.reason[i] = True, self._next, reason
            self._next += 1
            taken += 1
        return taken

    def table(self) -> pa.Table:
        return pa.table(
            {"trace_id": self.ids, "kept": self.kept, "reason": self.reason.astype(str), "rank": self.rank},
            schema=SELECTION,
        )


def one_per_question(pool: pa.Table, order: np.ndarray) -> np.ndarray:
    """Keep the first row of each question in ``order`` (a permutation or subset of row indices)."""
    qids = pool.column("question_id").to_numpy(zero_copy_only=False)[order]
    _, first = np.unique(qids, return_index=True)
    return order[np.sort(first)]


def column(pool: pa.Table, name: str, fill=np.nan) -> np.ndarray:
    col = pool.column(name)
    if pa.types.is_boolean(col.type):
        return pc.fill_null(col, False).to_numpy(zero_copy_only=False)
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        return pc.fill_null(col.cast(pa.float64()), fill).to_numpy(zero_copy_only=False)
    return col.to_numpy(zero_copy_only=False)
