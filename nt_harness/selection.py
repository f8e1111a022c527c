"""A small builder for selector output: every trace gets kept/dropped and the reason, in the style of
datatrove's counters and exclusion writer."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nt_harness.records import SELECTION


class Decisions:
    """Per trace: kept or not, why, and in which order. Whole-array operations, so 1M traces take seconds;
    trace ids stay an Arrow column."""

    def __init__(self, pool: pa.Table, default_reason: str = "dropped: not chosen"):
        n = pool.num_rows
        self.ids = pool.column("trace_id")
        self.kept = np.zeros(n, dtype=bool)
        self.rank = np.full(n, -1, dtype=np.int32)
        self.reason = np.full(n, default_reason, dtype=object)
        self._next = 0

    @property
    def n_kept(self) -> int:
        return int(self.kept.sum())

    def drop(self, mask: np.ndarray, reason: str) -> None:
        """Mark still-undecided rows in ``mask`` as dropped for ``reason``."""
        mask = np.asarray(mask, dtype=bool) & ~self.kept
        self.reason[mask] = reason

    def keep(self, rows, reason, budget: int | None = None) -> int:
        """Keep ``rows`` (indices, in order of preference) until ``budget`` examples are kept; ``reason`` is
        one string or one per row. Returns how many were newly kept."""
        rows = np.asarray(rows, dtype=np.int64)
        reasons = None if isinstance(reason, str) else np.asarray(reason, dtype=object)
        _, first = np.unique(rows, return_index=True)  # a row listed twice counts once
        first = np.sort(first)
        fresh = first[~self.kept[rows[first]]]
        if budget is not None:
            fresh = fresh[: max(budget - self.n_kept, 0)]
        chosen = rows[fresh]
        self.kept[chosen] = True
        self.rank[chosen] = np.arange(self._next, self._next + len(chosen), dtype=np.int32)
        self.reason[chosen] = reason if reasons is None else reasons[fresh]
        self._next += len(chosen)
        return len(chosen)

    def table(self) -> pa.Table:
        return pa.table(
            {"trace_id": self.ids, "kept": self.kept, "reason": pa.array(self.reason, pa.string()), "rank": self.rank},
            schema=SELECTION,
        )


def codes(pool: pa.Table, name: str) -> np.ndarray:
    """Integer code per row for a categorical column (nulls get a code of their own); sorting ints is ~10x
    faster than sorting a million Python strings."""
    encoded = pc.dictionary_encode(pool.column(name).combine_chunks())
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    null = len(encoded.dictionary)
    return pc.fill_null(encoded.indices, null).to_numpy(zero_copy_only=False).astype(np.int64)


def first_per_question(question: np.ndarray, order: np.ndarray) -> np.ndarray:
    """The first row of each question in ``order`` (row indices, in order of preference), order kept."""
    order = np.asarray(order, dtype=np.int64)
    _, first = np.unique(question[order], return_index=True)
    return order[np.sort(first)]


def start(pool: pa.Table) -> tuple[Decisions, np.ndarray, np.ndarray]:
    """Decisions for the pool, its complete-trace mask (only complete responses are trainable:
    NaturalThoughts §4 keeps complete responses only) and question codes."""
    d = Decisions(pool)
    complete = column(pool, "complete") if "complete" in pool.column_names else np.ones(pool.num_rows, bool)
    complete = np.asarray(complete, dtype=bool)
    d.drop(~complete, "dropped: incomplete")
    return d, complete, codes(pool, "question_id")


def unchosen(d: Decisions, question: np.ndarray) -> np.ndarray:
    """Rows whose question has no kept trace yet."""
    taken = np.zeros(question.max() + 1 if len(question) else 0, dtype=bool)
    taken[question[d.kept]] = True
    return ~taken[question]


def fill_random(d: Decisions, question: np.ndarray, eligible: np.ndarray, budget: int, rng, reason: str) -> int:
    """Top up to the budget with random eligible traces of questions not chosen yet (recorded as fill)."""
    if d.n_kept >= budget:
        return 0
    rows = np.flatnonzero(eligible & unchosen(d, question))
    return d.keep(first_per_question(question, rng.permutation(rows)), reason, budget)


def one_per_question(pool: pa.Table, order: np.ndarray) -> np.ndarray:
    """The first row of each question in ``order`` (row indices, in order of preference), order kept."""
    return first_per_question(codes(pool, "question_id"), order)


def column(pool: pa.Table, name: str, fill=np.nan) -> np.ndarray:
    col = pool.column(name)
    if pa.types.is_boolean(col.type):
        return pc.fill_null(col, False).to_numpy(zero_copy_only=False)
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        return pc.fill_null(col.cast(pa.float64()), fill).to_numpy(zero_copy_only=False)
    return col.to_numpy(zero_copy_only=False)
