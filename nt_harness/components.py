"""The kinds of component and the context a stage runs in (the executor kind: ``nt_harness.executors``).

A component is a class with a ``name``, a ``version`` (bump it when its output changes: it is part of
every cache key) and a pydantic ``Settings`` model (unknown keys are refused, so a typo is named).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from nt_harness.records import ResultRow

log = logging.getLogger("nt_harness")


class Settings(BaseModel):
    """Base for component settings: unknown keys are an error, values are validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


@dataclass
class Context:
    """What a stage may use besides its inputs.

    ``out`` is a private folder the stage writes into; it becomes the stored output only when the stage
    returns (temp + rename). ``scratch`` survives a crash, for work that resumes (teacher shards).
    """

    out: Path
    scratch: Path
    workdir: Path
    seed: int = 0
    threads: int = 2
    progress: Any = None  # nt_harness.progress.Progress
    resolve_model: Any = None  # callable(spec: str) -> str (local folder or hub id)
    source: Any = None  # the pipeline's Source, for its verifier
    build: Any = None  # callable(kind, spec, where) -> Component, from the run's plugins (see Component.nested)
    benchmarks: list = field(default_factory=list)  # the run's Benchmarks, for a selector that uses_benchmarks
    stats: dict = field(default_factory=dict)  # counters that go into the manifest


class Component:
    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    description: ClassVar[str] = ""

    # settings that change how fast or how politely a stage runs, never what it writes (concurrency,
    # retries, rate limits): left out of the cache key, so a run stopped and resumed with new ones finds
    # its shards; the manifest still records them
    execution: ClassVar[tuple[str, ...]] = ()

    class Settings(Settings):
        pass

    def __init__(self, settings: Settings | None = None, **kw):
        self.settings = settings if settings is not None else self.Settings(**kw)

    def __repr__(self):
        return f"{self.kind}:{self.name}"

    def key_settings(self) -> dict:
        """The settings that make up the cache key: all but ``execution``."""
        return self.settings.model_dump(mode="json", exclude=set(self.execution))

    def check(self) -> None:
        """Check what the settings name outside themselves (task names, files) before any work, so a typo is
        refused in seconds rather than after training; raise ValueError with the problem. Default: nothing."""

    def nested(self) -> dict[str, tuple[str, dict]]:
        """Components this one builds at run time with ``ctx.build``, as {setting: (kind, spec)}, so the
        pipeline checks their settings before any work (e.g. the teacher an LLM annotator asks)."""
        return {}


class Source(Component):
    """Produces questions (schema ``records.QUESTIONS``) or ready-made traces."""

    kind = "source"

    def load(self, ctx: Context) -> pa.Table:
        raise NotImplementedError

    def score(self, questions: pa.Table, answers: list[str]) -> list[float | None]:
        """Grade ``answers[i]`` against question row i; None when this source has no verifier."""
        return [None] * len(answers)

    def final_answers(self, questions: pa.Table, responses: list[str]) -> list[str | None]:
        """The final answer of each free-form response to question row i, read as this source's answers look
        (a teacher that writes no answer tags uses it); None where there is none or the source cannot say."""
        return [None] * len(responses)


class Teacher(Component):
    """Turns questions into traces (schema ``records.TRACES``), n per question."""

    kind = "teacher"

    def generate(self, questions: pa.Table, ctx: Context) -> pa.Table:
        raise NotImplementedError


class Annotator(Component):
    """Returns a table with ``trace_id`` and new columns, one row per trace of the pool.

    ``requires`` names columns written by earlier annotators that this one reads (e.g. a judge reads
    ``system1_answer``): the pipeline checks they come first and makes their outputs part of the cache key.
    """

    kind = "annotator"
    columns: ClassVar[tuple[str, ...]] = ()
    requires: ClassVar[tuple[str, ...]] = ()

    def annotate(self, pool: pa.Table, ctx: Context) -> pa.Table:
        raise NotImplementedError


class Selector(Component):
    """Decides, for every trace of the pool, whether it is kept and why (schema ``records.SELECTION``).

    ``requires`` names the annotation columns it reads, so the pipeline can name a missing annotator.
    """

    kind = "selector"
    requires: ClassVar[tuple[str, ...]] = ()
    # decontamination: the select stage gets the run's benchmarks in ``ctx.benchmarks`` (their ``questions``),
    # and their settings join its cache key, so another benchmark set selects anew
    uses_benchmarks: ClassVar[bool] = False

    def select(self, pool: pa.Table, budget: int, seed: int, ctx: Context) -> pa.Table:
        raise NotImplementedError


class Trainer(Component):
    """Fine-tunes ``student`` on the training examples; writes a Hugging Face folder into ``ctx.out``. The stats
    it returns are read as ``records.StageStats`` (tokens, device and GPUs, examples trained on, provenance)."""

    kind = "trainer"

    def train(self, examples: pa.Table, student: str, ctx: Context) -> dict:
        raise NotImplementedError


class Benchmark(Component):
    """Scores a model folder; returns ``records.ResultRow``s (or dicts of their fields), one leaderboard column
    per field.

    A benchmark may also write ``ctx.out / "samples.parquet"`` (``records.SAMPLES``: ``task``, ``question_id``
    and one numeric column per metric, e.g. ``exact_match``): the leaderboard then shows 95 % intervals and runs
    paired tests between recipes on the same questions. With ``question``, ``target``, ``response`` and
    ``extracted`` (strings) too, `nt-harness view` shows each answer beside the others.
    """

    kind = "benchmark"

    def evaluate(self, model: str, ctx: Context) -> list[ResultRow | dict]:
        raise NotImplementedError

    def questions(self) -> dict[str, list[str]]:
        """The question texts per task, as the model sees them, so a selector can decontaminate against
        exactly what a run evaluates. Optional: a benchmark without it cannot be decontaminated against."""
        raise NotImplementedError(f"benchmark {self.name!r} does not list its questions")


KINDS = ("source", "teacher", "annotator", "selector", "trainer", "benchmark", "executor")  # executor: executors.py
