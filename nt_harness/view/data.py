"""What the view reads: a leaderboard folder, and the store entries its rows name.

A leaderboard's ``leaderboard.json`` names every stage of a row by its store key; the store keeps the
tables behind them (the pool, each annotation, the selection, the evaluation's samples, the trainer's
metrics). A folder viewed without its store still shows the leaderboard: the pages say which entries
are missing. Tables are read once, only the columns a page lists, and kept in memory.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nt_harness import UserError
from nt_harness.leaderboard import BASE, load, rows_of, summarize, summary_table, tasks_of
from nt_harness.records import NO_ANSWER as NO_ANSWER_METRIC
from nt_harness.records import TRAIN_METRICS

PREVIEW = 160  # characters of a question or answer shown in a table cell
# a trace's texts, and any annotation text longer than SHORT characters on average: on the trace's own page
LONG = ("question", "thinking", "answer", "reference", "metadata")
SHORT = 80
SELECTION_FIRST = ("trace_id", "kept", "reason", "rank", "mode", "topic", "question")
# an evaluated question's status under the task's headline metric
RIGHT, WRONG, PARTIAL, NO_ANSWER = "right", "wrong", "partial", "no answer"


def open_studies(folders: list[Path], workdir: Path) -> dict[str, Study]:
    """Each leaderboard folder by its name (the CLI has checked each holds a leaderboard.json)."""
    studies = {}
    for folder in folders:
        folder = Path(folder)
        name = folder.resolve().name
        if name in studies:
            raise UserError(f"two folders named {name!r}: view them one at a time")
        studies[name] = Study(name, folder, Path(workdir))
    return studies


@dataclass
class Study:
    name: str
    folder: Path
    workdir: Path

    @cached_property
    def _loaded(self):
        return load(self.folder)

    @property
    def meta(self) -> dict:
        return self._loaded[1]

    @cached_property
    def runs(self) -> list[Run]:
        return [Run(self, i, r) for i, r in enumerate(self._loaded[0])]

    @cached_property
    def summary(self) -> tuple[list[str], list[list[str]]]:
        return summary_table(summarize(self._loaded[0]))

    def run(self, i: int) -> Run:
        if not 0 <= i < len(self.runs):
            raise KeyError(i)
        return self.runs[i]

    def figures(self) -> list[str]:
        return sorted(p.name for p in self.folder.glob("*.png"))


@dataclass
class Run:
    study: Study
    index: int
    result: object  # leaderboard.RunResult
    _tables: dict = field(default_factory=dict, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)  # one build of each table
    orders: dict = field(default_factory=dict, repr=False)  # the selection's row order under each sort asked for

    @property
    def label(self) -> str:
        r = self.result
        return r.recipe if r.recipe == BASE else f"{r.recipe} @ {r.budget}"

    def entry(self, stage: str, key: str) -> Path | None:
        """The store folder of a stage by its key (the folder name is ``<component>-<key>``)."""
        found = sorted((self.study.workdir / "store" / stage).glob(f"*-{key}"))
        return found[0] if found and (found[0] / "manifest.json").exists() else None

    def stages(self) -> list[tuple[str, str]]:
        """(stage, key) of every stage of this row, in pipeline order."""
        out = []
        for stage, keys in self.result.stages.items():
            for key in keys if isinstance(keys, list) else [keys]:
                out.append((stage, key))
        return out

    def provenance(self) -> list[dict]:
        """One row per stage: its key and, where the store has it, component, version, settings, wall time."""
        rows = []
        for stage, key in self.stages():
            path = self.entry(stage, key)
            m = json.loads((path / "manifest.json").read_text()) if path else {}
            rows.append({"stage": stage, "key": key, "found": path is not None, "component": m.get("component", ""),
                         "version": m.get("version", ""), "wall_s": m.get("wall_s"), "started": m.get("started", ""),
                         "settings": m.get("settings", {}), "inputs": m.get("inputs", {}),
                         "stats": {k: v for k, v in m.get("stats", {}).items() if not isinstance(v, (list, dict))},
                         "versions": m.get("versions", {})})
        return rows

    def missing(self, stage: str) -> list[str]:
        """Keys of this stage the store does not hold (the view says so instead of failing)."""
        return [k for s, k in self.stages() if s == stage and self.entry(s, k) is None]

    # -- the selection ---------------------------------------------------------------------------------
    @property
    def has_selection(self) -> bool:
        return "select" in self.result.stages

    def selection(self) -> pa.Table:
        """Every trace of the pool: kept or not, why, rank, and the annotators' scalar columns."""
        with self._lock:
            if "selection" not in self._tables:
                self._tables["selection"] = self._selection()
            return self._tables["selection"]

    def _selection(self) -> pa.Table:
        stages = self.result.stages
        sel_path = self.entry("select", stages["select"])
        if sel_path is None:
            raise LookupError(f"selection {stages['select']} is not in the store {self.study.workdir}")
        table = pq.read_table(sel_path / "data.parquet")
        pool_path = self.entry("teacher", stages.get("teacher", ""))
        if pool_path is not None:
            wanted = [c for c in ("trace_id", "question_id", "topic", "question", "complete", "completion_tokens")
                      if c in pq.read_schema(pool_path / "data.parquet").names]
            # a question's text is repeated for each of its traces: read once per question, as a dictionary
            pool = pq.read_table(pool_path / "data.parquet", columns=wanted,
                                 read_dictionary=[c for c in ("question_id", "topic", "question") if c in wanted])
            pool = pool.unify_dictionaries().combine_chunks()
            if "question" in wanted:
                question = pool.column("question").chunk(0)
                preview = pa.DictionaryArray.from_arrays(
                    question.indices, pc.utf8_slice_codeunits(question.dictionary, 0, PREVIEW))
                pool = pool.set_column(pool.schema.get_field_index("question"), "question", preview)
            table = _beside(table, pool)
        for key in stages.get("annotate", []):
            path = self.entry("annotate", key)
            if path is not None:
                table = _beside(table, _scalars(pq.read_table(path / "data.parquet")))
        first = [c for c in SELECTION_FIRST if c in table.column_names]
        return _compact(table.select(first + [c for c in table.column_names if c not in first]))

    def selection_order(self) -> pa.Array:
        """The selection's rows as a page lists them unless asked otherwise: the kept traces in the order the
        selector chose them, then the dropped in pool order (row numbers, so 10^6 rows are never moved)."""
        with self._lock:
            if "order" not in self._tables:
                self._tables["order"] = pc.sort_indices(self.selection(), sort_keys=[("kept", "descending"),
                                                                                     ("rank", "ascending")])
            return self._tables["order"]

    def _trace_tables(self) -> list[Path]:
        """The stored tables that say something of each trace: the pool, then each annotation."""
        stages = self.result.stages
        found = [self.entry("teacher", stages.get("teacher", ""))]
        found += [self.entry("annotate", key) for key in stages.get("annotate", [])]
        return [path / "data.parquet" for path in found if path is not None]

    def trace(self, trace_id: str) -> dict:
        """A trace in full: the teacher's texts, the selection's decision and every annotation."""
        selection = self.entry("select", self.result.stages["select"])
        decision = _row(selection / "data.parquet", trace_id) if selection else None
        if decision is None:
            raise KeyError(trace_id)
        row = {"trace_id": trace_id}
        for path in self._trace_tables():
            row.update(_row(path, trace_id) or {})
        return {**row, **decision}

    def traces(self, limit: int | None):
        """Every trace in full (for a static site, an export), read in one pass rather than one lookup each."""
        table = pq.read_table(self.entry("select", self.result.stages["select"]) / "data.parquet")
        for path in self._trace_tables():
            table = _beside(table, pq.read_table(path))
        yield from table.slice(0, limit).to_pylist()

    # -- the evaluation -------------------------------------------------------------------------------
    def tasks(self) -> dict[str, tuple[str, str]]:
        """task -> its headline (metric, filter), as the leaderboard reads it."""
        return tasks_of([rows_of(self.result)])

    def samples(self, task: str) -> pa.Table:
        """One row per question of ``task`` under its headline filter, with a status: right, wrong, partial,
        no answer."""
        with self._lock:
            if ("samples", task) not in self._tables:
                self._tables[("samples", task)] = self._samples(task)
            return self._tables[("samples", task)]

    def _all_samples(self) -> pa.Table | None:
        """Every evaluation's samples of this row, read once for all its tasks."""
        if "all samples" not in self._tables:
            paths = [self.entry("evaluate", key) for key in self.result.stages.get("evaluate", [])]
            parts = [pq.read_table(p / "samples.parquet") for p in paths if p and (p / "samples.parquet").exists()]
            self._tables["all samples"] = pa.concat_tables(parts, promote_options="permissive") if parts else None
        return self._tables["all samples"]

    def _samples(self, task: str) -> pa.Table:
        metric, filter_ = self.tasks()[task]
        table = self._all_samples()
        if table is None:
            raise LookupError(f"no stored samples for {task} of {self.label} in {self.study.workdir}")
        table = table.filter(pc.field("task") == task)
        if "filter" in table.column_names and filter_ in set(table.column("filter").to_pylist()):
            table = table.filter(pc.field("filter") == filter_)
        status = [_status(v, n) for v, n in zip(
            table.column(metric).to_pylist(), table.column(NO_ANSWER_METRIC).to_pylist()
            if NO_ANSWER_METRIC in table.column_names else [None] * len(table))]
        table = table.append_column("status", pa.array(status, pa.string()))
        if "question" in table.column_names:
            table = table.append_column("question_preview",
                                        pc.utf8_slice_codeunits(table.column("question"), 0, PREVIEW))
        return table.append_column("value", table.column(metric))

    # -- training ------------------------------------------------------------------------------------
    def training(self) -> pa.Table | None:
        """The trainer's per-step metrics (records.TRAIN_METRICS), when it wrote them; read once."""
        if "training" not in self._tables:
            key = self.result.stages.get("train")
            path = self.entry("train", key) if key else None
            found = path is not None and (path / TRAIN_METRICS).exists()
            self._tables["training"] = pq.read_table(path / TRAIN_METRICS) if found else None
        return self._tables["training"]


def _compact(table: pa.Table) -> pa.Table:
    """One chunk per column (Arrow's take on a many-chunk column copies all of it), and a column of few distinct
    strings (reason, topic) dictionary-encoded, so a filter on it compares small integers."""
    table = table.unify_dictionaries().combine_chunks()
    for i, f in enumerate(table.schema):
        if pa.types.is_string(f.type) and len(table) > 10_000:
            column = table.column(i)
            if pc.count_distinct(column.slice(0, 100_000)).as_py() <= 1_000:
                table = table.set_column(i, f.name, pc.dictionary_encode(column))
    return table


def _status(value, no_answer) -> str:
    if no_answer is not None and no_answer >= 1:
        return NO_ANSWER
    if value is None or (isinstance(value, float) and math.isnan(value)) or value <= 0:
        return WRONG
    return RIGHT if value >= 1 else PARTIAL


def _scalars(table: pa.Table) -> pa.Table:
    """An annotation's columns a table cell can show: a list of strings (strategies) joined; other lists
    (embeddings) and long texts (a System-1 answer, a judge's reply) left to the trace's page."""
    out = {}
    for f in table.schema:
        if f.name in LONG or pa.types.is_struct(f.type):
            continue
        if pa.types.is_list(f.type) or pa.types.is_large_list(f.type) or pa.types.is_fixed_size_list(f.type):
            if pa.types.is_string(f.type.value_type):
                out[f.name] = pc.binary_join(table.column(f.name), ", ")
            continue
        if pa.types.is_string(f.type) and (pc.mean(pc.utf8_length(table.column(f.name))).as_py() or 0) > SHORT:
            continue
        out[f.name] = table.column(f.name)
    return pa.table(out)


def _beside(left: pa.Table, right: pa.Table) -> pa.Table:
    """``right``'s new columns beside ``left``'s rows, matched on trace_id: by position when both list the same
    traces in the same order (the usual case, and instant on 10^6 rows), else by a join."""
    new = [c for c in right.column_names if c not in left.column_names]
    if not new:
        return left
    if right.num_rows == left.num_rows and right.column("trace_id").equals(left.column("trace_id")):
        for name in new:
            left = left.append_column(right.field(name), right.column(name))
        return left
    joined = left.join(right.select(["trace_id", *new]), "trace_id", join_type="left outer")
    order = pc.index_in(left.column("trace_id"), joined.column("trace_id"))
    return joined.take(order)


def _row(path: Path, trace_id: str) -> dict | None:
    table = pq.read_table(path, filters=[("trace_id", "=", trace_id)])
    return table.slice(0, 1).to_pylist()[0] if table.num_rows else None
