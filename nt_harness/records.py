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

And the two contracts the leaderboard reads, so a third-party benchmark or trainer fills every column by
filling these types: a benchmark's ``ResultRow``s (plus its per-question ``SAMPLES``), and what a stage's stats
say it cost and trained on (``StageStats``, with a trainer's ``Provenance``).
"""

from __future__ import annotations

import hashlib

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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

# benchmark -> leaderboard ---------------------------------------------------------------------------------
NO_FILTER = "none"  # lm-eval's name for a task's only, unnamed filter
HEADLINE_METRIC = "exact_match"  # a task's headline when none of its rows declares one (else its first ↑ metric)
THINK = "think"  # the inference mode of a task's own prompt
MODE_SEPARATOR = "@"  # a task named "<task>@<mode>" is <task> in another inference mode, e.g. gym_heldout@no-think
# lm-eval's way to say what a row's no_answer and gen_tokens say (how the nt_lmeval benchmark reports them):
NO_ANSWER = "no_answer"  # a row of its own with this metric: the share of responses with no answer found
RESPONSE_TOKENS = "response_tokens"  # a SAMPLES column: tokens generated for the question (mean over repeats)

# a benchmark's optional ``samples.parquet``: one row per question (and filter), for the 95 % CI and the paired
# tests; besides these, an optional ``filter`` column and one numeric column per metric, named as its rows' metric
SAMPLES = pa.schema([("task", pa.string()), ("question_id", pa.string())])
# optional SAMPLES string columns `nt-harness view` shows: each answer beside the others, with its status
SAMPLE_TEXTS = ("question", "target", "response", "extracted")

# trainer -> view: a trainer's ``TRAIN_METRICS`` file in its stage, one row per optimizer step, columns ``step``
# and any of TRAIN_CURVES (the view draws each it finds)
TRAIN_METRICS = "metrics.parquet"
TRAIN_CURVES = ("loss", "lr", "grad_norm", "tokens_per_s")


def split_mode(task: str) -> tuple[str, str]:
    """``gym_heldout@no-think`` -> (gym_heldout, no-think); a plain name is the task's own mode, think."""
    base, _, mode = task.partition(MODE_SEPARATOR)
    return base, mode or THINK


def metric_key(metric: str, filter_: str | None) -> str:
    """A per-question metric's name: ``metric`` alone under no filter, else lm-eval's ``metric,filter``."""
    return metric if filter_ in (None, "", NO_FILTER) else f"{metric},{filter_}"


class ResultRow(BaseModel):
    """One number a benchmark reports for one task, metric and filter: ``Benchmark.evaluate`` returns these (or
    dicts of them). Each leaderboard column of a task is a field here, so a row that fills them fills the
    columns; the 95 % CI and paired tests also need the benchmark's SAMPLES."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    benchmark: str
    task: str = Field(description="the task; `<task>@<mode>` for it in another inference mode (see `mode`)")
    metric: str = Field(description="e.g. exact_match; per question, the SAMPLES column of this name")
    filter: str = Field(NO_FILTER, description="how the answer was read, when there are several ways")
    value: float
    stderr: float | None = None
    n: int | None = Field(None, description="questions scored")
    higher_is_better: bool | None = Field(True, description="None: the benchmark cannot say (shown as ↓)")
    headline: str | None = Field(None, description="on the task's headline (metric, filter): why, a sentence")
    no_answer: float | None = Field(None, description="the share of responses with no answer found under this "
                                                      "filter (counted wrong); or a row of its own, NO_ANSWER")
    gen_tokens: float | None = Field(None, description="mean tokens generated per question; or SAMPLES' "
                                                       "RESPONSE_TOKENS column")

    @field_validator("filter", mode="before")
    @classmethod
    def _unnamed(cls, value):
        return value or NO_FILTER

    @property
    def mode(self) -> str:
        return split_mode(self.task)[1]


RESULT_FIELDS = tuple(ResultRow.model_fields)


def result_rows(rows: list, where: str) -> list[dict]:
    """A benchmark's rows checked as ResultRows, as they are stored: the fields it gave."""
    out = []
    for i, row in enumerate(rows):
        try:
            out.append(ResultRow.model_validate(row).model_dump(exclude_unset=True))
        except ValidationError as e:
            raise ValueError(f"{where}: result row {i}: {_problems(e)}") from None
    return out


def completed(rows: list[dict], per_question: dict) -> list[ResultRow]:
    """A run's stored rows, typed, with what lm-eval's form says elsewhere moved into the fields: ``no_answer``
    from the task's NO_ANSWER row under the same filter, ``gen_tokens`` from its RESPONSE_TOKENS per question
    (``per_question``: task -> metric_key -> {question_id: value})."""
    typed = [ResultRow.model_validate(r) for r in rows]
    unanswered = {(r.task, r.filter): r.value for r in typed if r.metric == NO_ANSWER}
    out = []
    for r in typed:
        tokens = per_question.get(r.task, {}).get(metric_key(RESPONSE_TOKENS, r.filter))
        out.append(r.model_copy(update={
            "no_answer": unanswered.get((r.task, r.filter)) if r.no_answer is None else r.no_answer,
            "gen_tokens": sum(tokens.values()) / len(tokens) if r.gen_tokens is None and tokens else r.gen_tokens}))
    return out


# a stage's cost and provenance -> leaderboard ------------------------------------------------------------------
class Provenance(BaseModel):
    """Where a checkpoint comes from beyond the store's keys: a trainer returns it as its stats' ``provenance``;
    the leaderboard shows these fields, and the run's provenance keeps any other entry too."""

    model_config = ConfigDict(extra="allow")

    chat_template_sha: str = Field("", description="sha256 of the chat template the student was trained with")


class StageStats(BaseModel):
    """What the leaderboard reads of a stage's stats (``ctx.stats`` and the dict the stage returns): what it
    cost and, for a trainer, what it trained on. A stage fills what applies to it; any other key is its own,
    kept in its manifest."""

    model_config = ConfigDict(extra="allow")

    device: str | None = Field(None, description='where it ran: "cuda" counts wall time x gpus as GPU-hours')
    gpus: float = Field(0, ge=0)
    prompt_tokens: int = Field(0, ge=0, description="a teacher's (the pipeline counts them from its traces)")
    completion_tokens: int = Field(0, ge=0, description="a teacher's, as prompt_tokens")
    train_tokens: int = Field(0, ge=0, description="a trainer's: the tokens it trained on")
    cost_usd: float | None = Field(None, ge=0, description="what it paid, e.g. an API teacher")
    examples: int | None = Field(None, ge=0, description="a trainer's: the examples it trained on, after any it "
                                                         "dropped (e.g. too long); None: all it was given")
    summary: str | None = Field(None, description="an annotator's one line on the pool")
    provenance: Provenance = Provenance()


def stage_stats(stats: dict, where: str) -> StageStats:
    try:
        return StageStats.model_validate(stats)
    except ValidationError as e:
        raise ValueError(f"{where}: stats: {_problems(e)}") from None


def _problems(e: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())


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
