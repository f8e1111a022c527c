"""The schemas that flow between stages. Every stage output is an Arrow table stored as Parquet.

question  one problem: stable ``question_id`` (hash of source + text), ``question``, ``reference``
          (the reference answer, may be empty), ``topic`` (domain/category), ``metadata`` (JSON the
          source's verifier needs).
trace     one teacher sample for a question: ``trace_id`` = ``question_id/sample``, the teacher's
          ``thinking`` and final ``answer``, ``complete`` (thinking ended on its own, not cut off),
          ``finish_reason`` and token counts. Optional: ``reasoning_tokens`` (int32, null where unknown), the
          teacher's own count of the thinking's tokens (hf and vllm count what they generated before the end
          of thinking; openai takes the server's usage count); `conform` keeps it as an extra column and the
          `length` annotator prefers it to re-tokenizing.
selection every trace of the pool with ``kept`` and ``reason`` (why kept or dropped) and ``rank``
          (order of choice; -1 when dropped).
annotation ``trace_id`` plus the columns an annotator adds (e.g. ``thinking_tokens``, ``correct``).
"""

from __future__ import annotations

import hashlib

import pyarrow as pa

QUESTIONS = pa.schema(
    [
        ("question_id", pa.string()),
        ("source", pa.string()),
        ("question", pa.string()),
        ("reference", pa.string()),
        ("topic", pa.string()),
        ("metadata", pa.string()),
    ]
)

TRACES = pa.schema(
    list(QUESTIONS)
    + [
        ("trace_id", pa.string()),
        ("teacher", pa.string()),
        ("sample", pa.int32()),
        ("thinking", pa.string()),
        ("answer", pa.string()),
        ("complete", pa.bool_()),
        ("finish_reason", pa.string()),
        ("prompt_tokens", pa.int32()),
        ("completion_tokens", pa.int32()),
    ]
)

# a selection may add ``mode`` (string): how a kept trace trains, "system2" (the whole trace) or "system1" (the
# final answer only); absent or null: System-2 (mixed distillation, e.g. the `mix` selector)
SELECTION = pa.schema(
    [("trace_id", pa.string()), ("kept", pa.bool_()), ("reason", pa.string()), ("rank", pa.int32())]
)

EXAMPLES = pa.schema(
    [
        ("trace_id", pa.string()),
        ("question", pa.string()),
        ("thinking", pa.string()),
        ("answer", pa.string()),
        ("mode", pa.string()),  # "system2": full trace; "system1": final answer only
    ]
)

# headline: on the one (metric, filter) a task declares its headline number, why (a sentence); else None
RESULT_FIELDS = ("benchmark", "task", "metric", "filter", "value", "stderr", "n", "higher_is_better", "headline")
NO_FILTER = "none"  # lm-eval's name for a task's only, unnamed filter


def metric_key(metric: str, filter_: str | None) -> str:
    """A per-question metric's name: ``metric`` alone under no filter, else lm-eval's ``metric,filter``."""
    return metric if filter_ in (None, "", NO_FILTER) else f"{metric},{filter_}"


def question_id(source: str, text: str) -> str:
    """Stable across runs and machines: the same question always has the same id."""
    return hashlib.sha256(f"{source}\x00{text}".encode()).hexdigest()[:16]


def conform(table: pa.Table, schema: pa.Schema, where: str) -> pa.Table:
    """Check and order columns; extra columns are kept after the schema's own."""
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise ValueError(f"{where}: missing column(s) {', '.join(missing)}")
    ordered = table.select([f.name for f in schema]).cast(schema)
    for name in table.column_names:
        if name not in schema.names:
            ordered = ordered.append_column(name, table.column(name))
    return ordered


def first_rows(pool: pa.Table) -> tuple[list[str], list[int]]:
    """Question ids in pool order and the row of each one's first trace: a per-question annotator (topic,
    embedding, System-1 answer) asks about each question once however many traces it has."""
    first: dict[str, int] = {}
    for i, qid in enumerate(pool.column("question_id").to_pylist()):
        first.setdefault(qid, i)
    return list(first), list(first.values())


def trace_id(question_id: str, sample: int) -> str:
    """A trace's id: its question and sample index, so a resumed or re-sharded run names a trace as before."""
    return f"{question_id}/{sample}"
