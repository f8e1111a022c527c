"""A model-free study for the executor tests, installed as a plugin (entry point ``study``) so that worker
processes find it. Every stage that builds appends ``<stage> start|done <key>`` to ``<workdir>/builds.log``,
so a test counts builds. ``NT_STUDY_HANG=<file>``: while that file exists, the trainer writes its pid to
``<file>.pid`` and sleeps, to be killed mid-stage.

It is also a third party that knows only ``nt_harness.records``' types: its teacher, trainer and ``quiz``
benchmark report cost, provenance and results through them (StageStats, Provenance, ResultRow, SAMPLES), never
through the names the first-party plugins write."""

import hashlib
import json
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import nt_harness
from nt_harness.components import Benchmark, Settings, Selector, Source, Teacher, Trainer
from nt_harness.records import QUESTIONS, SAMPLES, SELECTION, TRACES, Provenance, ResultRow, StageStats
from nt_harness.recipes import Profile, Recipe

N = 6


def note(ctx, stage: str, what: str) -> None:
    key = ctx.out.name.split("-")[-2]  # .tmp-<component>-<key>-<pid>
    with open(ctx.workdir / "builds.log", "a") as f:
        f.write(f"{stage} {what} {key} {os.getpid()}\n")


class Numbers(Source):
    name = "numbers"

    def load(self, ctx):
        note(ctx, "source", "done")
        rows = [{"question_id": f"q{i}", "source": "numbers", "question": f"{i} + 1?", "reference": str(i + 1),
                 "topic": "t", "metadata": "{}"} for i in range(N)]
        return pa.Table.from_pylist(rows, schema=QUESTIONS)


class Echo(Teacher):
    name = "echo"

    class Settings(Settings):
        delay: float = 0.0

    execution = ("delay",)

    def generate(self, questions, ctx):
        note(ctx, "teacher", "start")
        time.sleep(self.settings.delay)
        rows = [{**q, "trace_id": f"{q['question_id']}/0", "teacher": "echo", "sample": 0, "thinking": "hm " * (i + 1),
                 "answer": f"<answer>{q['reference']}</answer>", "complete": True, "finish_reason": "stop",
                 "prompt_tokens": 1, "completion_tokens": i + 1} for i, q in enumerate(questions.to_pylist())]
        note(ctx, "teacher", "done")
        cost = StageStats(cost_usd=0.001 * sum(r["completion_tokens"] for r in rows))
        ctx.stats.update(cost.model_dump(exclude_unset=True))
        return pa.Table.from_pylist(rows, schema=TRACES)


class EveryOther(Selector):
    """Keeps ``budget`` traces starting at ``offset``: each recipe its own selection."""

    name = "every-other"

    class Settings(Settings):
        offset: int = 0

    def select(self, pool, budget, seed, ctx):
        ids = pool.column("trace_id").to_pylist()
        kept = {ids[(self.settings.offset + 2 * i) % len(ids)] for i in range(budget)}
        return pa.table({"trace_id": ids, "kept": [t in kept for t in ids],
                         "reason": ["kept" if t in kept else "not chosen" for t in ids],
                         "rank": list(range(len(ids)))}, schema=SELECTION)


class Memorize(Trainer):
    """A "model" that is the list of answers it was trained on, but the first ``drop`` (as a trainer drops
    examples too long to train on); ``gpus`` > 0: it says it ran on that many CUDA GPUs."""

    name = "memorize"

    class Settings(Settings):
        delay: float = 0.0
        drop: int = 0
        gpus: int = 0

    execution = ("delay", "gpus")

    def train(self, examples, student, ctx):
        note(ctx, "train", "start")
        hang = os.environ.get("NT_STUDY_HANG")
        if hang and Path(hang).exists():
            Path(f"{hang}.pid").write_text(str(os.getpid()))
            time.sleep(120)
        time.sleep(self.settings.delay)
        answers = examples.column("answer").to_pylist()[self.settings.drop:]
        (ctx.out / "model").mkdir()
        (ctx.out / "model" / "answers.json").write_text(json.dumps(answers))
        note(ctx, "train", "done")
        gpu = {"device": "cuda", "gpus": self.settings.gpus} if self.settings.gpus else {}
        return StageStats(train_tokens=len(answers), examples=len(answers), **gpu,
                          provenance=Provenance(chat_template_sha=hashlib.sha256(b"memorize").hexdigest())
                          ).model_dump(exclude_unset=True)


class Recall(Benchmark):
    """Scores a model by how many of the questions' answers it memorized; the base student knows none."""

    name = "recall"

    def evaluate(self, model, ctx):
        note(ctx, "evaluate", "done")
        path = Path(model) / "answers.json"
        known = set(json.loads(path.read_text())) if path.exists() else set()
        scores = [float(f"<answer>{i + 1}</answer>" in known) for i in range(N)]
        pq.write_table(pa.Table.from_pylist([{"task": "recall", "question_id": f"q{i}", "exact_match": s}
                                             for i, s in enumerate(scores)]), ctx.out / "samples.parquet")
        return [{"benchmark": "recall", "task": "recall", "metric": "exact_match", "filter": "none",
                 "value": sum(scores) / N, "stderr": 0.0, "n": N, "higher_is_better": True}]


class Quiz(Benchmark):
    """Recall's questions asked as a third-party benchmark would: in two inference modes (the plain task and
    ``quiz@no-think``), every ResultRow field filled (no-answer share, mean generated tokens), per-question
    ``correct`` scores in SAMPLES, and its GPU in its stats."""

    name = "quiz"

    def evaluate(self, model, ctx):
        path = Path(model) / "answers.json"
        known = set(json.loads(path.read_text())) if path.exists() else set()
        rows, samples = [], []
        for task, tokens in (("quiz", 40.0), ("quiz@no-think", 4.0)):
            scores = [float(f"<answer>{i + 1}</answer>" in known and (task == "quiz" or i % 2 == 0)) for i in range(N)]
            samples += [{"task": task, "question_id": f"q{i}", "correct": s} for i, s in enumerate(scores)]
            mean = sum(scores) / N
            rows.append(ResultRow(benchmark="quiz", task=task, metric="correct", value=mean, stderr=0.1, n=N,
                                  headline="a known answer, word for word" if task == "quiz" else None,
                                  no_answer=1 - mean, gen_tokens=tokens if known else 2 * tokens))
        pq.write_table(pa.Table.from_pylist(samples, schema=SAMPLES.append(pa.field("correct", pa.float64()))),
                       ctx.out / "samples.parquet")
        ctx.stats.update(StageStats(device="cuda", gpus=1).model_dump(exclude_unset=True))
        return rows



def installed_env(site: Path, plugins: str, **extra: str) -> dict:
    """The environment of a command (and its workers) that sees this study as an installed plugin: an entry
    point in ``site``, this folder on the path, and only the ``plugins`` named loaded."""
    dist = site / "nt_study-1.0.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: nt-study\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[nt_harness]\nstudy = study_plugin\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(Path(__file__).resolve().parent)]),
            "NT_HARNESS_LOAD_PLUGINS": plugins, "NT_HARNESS_THREADS": "1", **extra}

@nt_harness.hookimpl
def register_sources(register):
    register(Numbers)


@nt_harness.hookimpl
def register_teachers(register):
    register(Echo)


@nt_harness.hookimpl
def register_selectors(register):
    register(EveryOther)


@nt_harness.hookimpl
def register_trainers(register):
    register(Memorize)


@nt_harness.hookimpl
def register_benchmarks(register):
    register(Recall)
    register(Quiz)


@nt_harness.hookimpl
def register_recipes(register):
    register(Profile("study", "a model-free study in seconds", {
        "source": {"name": "numbers"}, "teacher": {"name": "echo"}, "trainer": {"name": "memorize"},
        "student": "no-such/student", "benchmarks": [{"name": "recall"}], "budget": 2, "seed": 0}))
    for offset, name in enumerate(("a", "b", "c")):
        register(Recipe(name, f"every other trace from {offset}", {"selector": {"name": "every-other",
                                                                                "offset": offset}}))
