"""Released trace sets (LIMO, s1K, OpenThoughts, ...) as sources whose rows already carry a trace.

A ``ReleasedSource`` reads a local JSONL/Parquet file (or, through HF datasets, a local clone of the hub
repo or a hub dataset id) and maps each row, through its subclass's ``parse_row``, to a question plus the
trace columns ``thinking``, ``answer`` and ``teacher``; the `released` teacher then passes those traces
through unchanged, so a released set runs through the same annotators, selectors, trainer and benchmarks
as a generated pool.
"""

from __future__ import annotations

import json

import pyarrow as pa
from pydantic import Field

from nt_harness.components import Settings, Source
from nt_harness.records import QUESTIONS, question_id
from nt_harness import datafiles
from nt_harness.datafiles import MalformedRow
from nt_harness.recipes import SpecError

TRACE_COLUMNS = pa.schema([("thinking", pa.string()), ("answer", pa.string()), ("teacher", pa.string())])


def text_field(row: dict, key: str, where: str, required: bool = True) -> str:
    """``row[key]`` as a string; a list of strings (s1K's ``thinking_trajectories``) is joined."""
    value = row.get(key)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = "\n\n".join(value)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise MalformedRow(f"{where}: `{key}` must be a non-empty string (got {value!r:.60})")
    return value


def between(text: str, start: str, end: str | None, where: str) -> str:
    """The text after ``start`` and before ``end`` (to the end of text when ``end`` is None or absent)."""
    i = text.find(start)
    if i < 0:
        raise MalformedRow(f"{where}: no {start} in the response")
    body = text[i + len(start):]
    if end is not None:
        j = body.find(end)
        if j >= 0:
            body = body[:j]
    return body.strip()


class ReleasedSource(Source):
    """Base class: subclasses set ``name`` and ``dataset`` and implement ``parse_row``."""

    version = "1"
    dataset = ""  # the hub id of the released set, for messages

    class Settings(Settings):
        path: str = Field(description="a .jsonl/.parquet file, a local clone of the hub repo, or a hub dataset id")
        split: str = "train"  # for a hub dataset
        config: str | None = None  # for a hub dataset with several configs (OpenThoughts-114k: "metadata")
        limit: int | None = Field(None, ge=1, description="the first N rows")

    def parse_row(self, row: dict, where: str) -> dict:
        """One row -> question, reference, topic, source, metadata (dict), thinking, answer, teacher, and
        any extra columns (floats) a selector may read, e.g. ``difficulty``."""
        raise NotImplementedError

    def rows(self):
        return datafiles.rows(self.settings.path, self.name, self.settings.split, self.settings.config)

    def load(self, ctx) -> pa.Table:
        out, extras = [], {}
        for where, row in self.rows():
            if not isinstance(row, dict):
                raise MalformedRow(f"{where}: expected an object, got {type(row).__name__}")
            parsed = self.parse_row(row, where)
            question = parsed["question"]
            out.append({
                "question_id": question_id(self.name, question),
                "source": parsed.get("source") or self.name,
                "question": question,
                "reference": (parsed.get("reference") or "").strip(),
                "topic": parsed.get("topic") or "",
                "metadata": json.dumps({"dataset": self.dataset, **parsed.get("metadata", {})}),
                "thinking": parsed["thinking"],
                "answer": parsed["answer"],
                "teacher": parsed.get("teacher") or self.dataset,
            })
            for key, value in parsed.get("extra", {}).items():
                extras.setdefault(key, {})[len(out) - 1] = value
            if self.settings.limit and len(out) >= self.settings.limit:
                break
        if not out:
            raise SpecError(f"source {self.name}: {self.settings.path} has no rows")
        table = pa.Table.from_pylist(out, schema=pa.schema(list(QUESTIONS) + list(TRACE_COLUMNS)))
        for key, values in extras.items():
            table = table.append_column(key, pa.array([values.get(i) for i in range(len(out))], pa.float64()))
        ctx.stats.update(rows=len(out), questions=len(set(table.column("question_id").to_pylist())))
        return table

    def score(self, questions: pa.Table, answers: list[str]) -> list[float | None]:
        """math-verify of the answer against the reference (None where there is no reference): the released
        sets are mostly competition math with a closed-form answer (LIMO's `answer`, s1K's `solution`)."""
        from math_verify import parse, verify

        out = []
        for reference, answer in zip(questions.column("reference").to_pylist(), answers):
            if not reference:
                out.append(None)
                continue
            gold, pred = parse(reference), parse(answer or "")
            out.append(float(verify(gold, pred)) if gold else None)
        return out
