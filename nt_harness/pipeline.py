"""source -> teacher -> annotators -> selector -> trainer -> benchmarks, each a cached stage.

Each stage reads only what the stage before it wrote (through the store) and is keyed by its component,
settings and input keys; ``force`` names the stages to recompute.

A study is a graph of such stages: ``plan`` gives a run's nodes (their keys computed without running
anything) and ``build_node`` builds one node from the store, its inputs already there, in this process or
another (``nt_harness.executors``). Then ``run`` only reads what the nodes stored.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import ValidationError

from nt_harness.components import Component, Context
from nt_harness.models import ModelResolver
from nt_harness.plugins import Plugins
from nt_harness.progress import Progress
from nt_harness.records import (EXAMPLES, QUESTIONS, SAMPLES, SELECTION, TRACES, StageStats, conform,
                                metric_key, result_rows, stage_stats)
from nt_harness.recipes import RunSpec, SpecError
from nt_harness.store import Entry, Store, write_table

STAGES = ("source", "teacher", "annotate", "select", "train", "evaluate")


@dataclass(frozen=True)
class Node:
    """One stage of a study, described by plain data so another process can build it (``run_node``).

    ``key`` is its store key (unique across stages); ``deps`` the keys of the nodes it reads; ``recipe`` and
    ``spec`` one run that contains it (a node that recipes share is one node), ``base`` whether that run is the
    untrained student's; ``force`` whether it is built again even when stored."""

    stage: str
    component: str
    key: str
    deps: tuple[str, ...] = ()
    recipe: str = ""
    spec: RunSpec | None = field(default=None, compare=False, hash=False)
    base: bool = False
    force: bool = False

    def __str__(self):
        return f"{self.stage} {self.component} ({self.key[:8]})"


class _Reached(Exception):
    """``build_node``'s stop: the node's stage is stored, the rest of the run is not its business."""


@dataclass
class RunResult:
    """What the leaderboard needs from one (recipe, budget, student) run: ``results`` are its benchmarks' rows as
    stored (``records.ResultRow``'s fields), ``examples`` those it trained on (the budget is what it asked for)."""

    recipe: str
    budget: int | None
    student: str
    results: list[dict]
    examples: int | None = None
    cost: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    stages: dict = field(default_factory=dict)  # stage -> store key
    per_question: dict = field(default_factory=dict)  # task -> metric -> {question_id: value}, for paired tests


def build_examples(pool: pa.Table, selection: pa.Table) -> pa.Table:
    """Kept traces in selection order as training examples, each in the mode the selection gives it (its
    optional ``mode`` column: "system2", the whole trace, or "system1", the final answer only; System-2 where
    it says nothing)."""
    kept = selection.filter(pc.field("kept")).sort_by("rank")
    index = {tid: i for i, tid in enumerate(pool.column("trace_id").to_pylist())}
    rows = pool.take(pa.array([index[t] for t in kept.column("trace_id").to_pylist()], pa.int64()))
    modes = (pc.fill_null(kept.column("mode"), "system2") if "mode" in kept.column_names
             else pa.array(["system2"] * kept.num_rows, pa.string()))
    return pa.table(
        {
            "trace_id": rows.column("trace_id"),
            "question": rows.column("question"),
            "thinking": rows.column("thinking"),
            "answer": rows.column("answer"),
            "mode": modes,
        },
        schema=EXAMPLES,
    )


def per_question_values(samples: pa.Table) -> dict:
    """task -> metric -> {question_id: value} from a benchmark's samples table (numeric columns); a sample row
    under a named filter (column ``filter``) gives its metrics as ``metric,filter`` (records.metric_key)."""
    out: dict = {}
    numeric = [f.name for f in samples.schema
               if (pa.types.is_floating(f.type) or pa.types.is_integer(f.type)) and f.name != "doc_id"]
    filters = samples.column("filter").to_pylist() if "filter" in samples.column_names else [None] * samples.num_rows
    tasks = samples.column("task").to_pylist()
    for task, filter_ in dict.fromkeys(zip(tasks, filters)):
        rows = samples.filter(pa.array([t == task and f == filter_ for t, f in zip(tasks, filters)]))
        qids = rows.column("question_id").to_pylist()
        out.setdefault(task, {}).update(
            {metric_key(m, filter_): dict(zip(qids, rows.column(m).to_pylist())) for m in numeric})
    return out


def stats_of(entry: Entry) -> StageStats:
    return StageStats.model_validate(entry.manifest.get("stats", {}))


def check_requires(i: int, ann: Component, written) -> None:
    missing = [c for c in ann.requires if c not in written]
    if missing:
        raise SpecError(f"annotators[{i}] {ann.name!r} needs column(s) {', '.join(missing)} from an earlier "
                        f"annotator; put the one that writes them before it")


class Pipeline:
    def __init__(
        self,
        plugins: Plugins,
        store: Store,
        progress: Progress,
        threads: int = 2,
        force: set[str] = frozenset(),
    ):
        self.plugins, self.store, self.progress = plugins, store, progress
        if threads < 1:
            raise SpecError(f"--threads {threads}: give 1 or more")
        self.threads = threads
        unknown = set(force) - set(STAGES) - {"all"}
        if unknown:
            raise SpecError(f"--force: unknown stage(s) {', '.join(sorted(unknown))}; stages: {', '.join(STAGES)}")
        self.force = set(STAGES) if "all" in force else set(force)
        # converted model aliases can be shared between stores (NT_HARNESS_MODELS)
        models = Path(os.environ.get("NT_HARNESS_MODELS") or store.root / "models")
        self.models = ModelResolver(plugins.models, models, progress)
        self._forced_done: set[str] = set()
        self._only: str | None = None  # build_node: the one key this pipeline may build

    def key(self, stage: str, comp: Component, inputs: dict) -> str:
        return self.store.key(stage, comp.name, comp.version, comp.key_settings(), inputs)

    def _say(self, text: str) -> None:
        """A run's summary lines, said by the run that reads the results, not by every node that passes by."""
        if self._only is None:
            self.progress.log(text)

    # building blocks -----------------------------------------------------------------------------
    def instantiate(self, kind: str, conf: dict | str, where: str) -> Component:
        conf = {"name": conf} if isinstance(conf, str) else dict(conf)
        if "name" not in conf:
            raise SpecError(f"{where}: no {kind} name given")
        cls = self.plugins.component(kind, conf.pop("name"))
        try:
            return cls(**conf)
        except ValidationError as e:
            # every unknown key in one line, with the known ones: a typo and its fix side by side
            unknown = [".".join(map(str, x["loc"])) for x in e.errors() if x["type"] == "extra_forbidden"]
            problems = [f"{where}: unknown key{'s' * (len(unknown) > 1)} {', '.join(unknown)} "
                        f"(known: {', '.join(cls.Settings.model_fields)})"] if unknown else []
            problems += [f"{'.'.join([where, *map(str, x['loc'])])}: {x['msg']}"
                         for x in e.errors() if x["type"] != "extra_forbidden"]
            raise SpecError(f"invalid settings for {kind} {cls.name!r}: {'; '.join(problems)}") from None
        except ValueError as e:  # a component's own check of its settings
            raise SpecError(f"{where}: {e}") from None

    def stage(self, stage: str, comp: Component, inputs: dict, run, source=None, benchmarks=()) -> Entry:
        key = self.key(stage, comp, inputs)
        entry = self.store.get(stage, comp.name, key, warn=self.progress.warn)
        if self._only is not None and key != self._only:  # build_node: an input, stored before the node runs
            if entry is None:
                raise RuntimeError(f"{stage} {comp.name} ({key[:8]}) is not stored: a node ran before its inputs")
            return entry
        forced = stage in self.force and (stage, key) not in self._forced_done
        if entry is None or forced:
            with self.store.building(stage, comp.name, key, wait=self.progress.log):
                # another process may have built it while this one waited for the lock
                entry = self.store.get(stage, comp.name, key, warn=self.progress.warn)
                if entry is None or forced:
                    entry = self._build(stage, comp, key, inputs, run, source, benchmarks)
        if self._only is not None:
            raise _Reached(entry)
        return entry

    def _build(self, stage: str, comp: Component, key: str, inputs: dict, run, source, benchmarks) -> Entry:
        settings = comp.settings.model_dump(mode="json")
        self._forced_done.add((stage, key))
        manifest = {"component": comp.name, "kind": comp.kind, "version": comp.version, "settings": settings,
                    "inputs": inputs}
        with self.store.writing(stage, comp.name, key, manifest) as out:
            ctx = Context(
                out=out,
                scratch=self.store.scratch(stage, comp.name, key),
                workdir=self.store.root,
                threads=self.threads,
                progress=self.progress,
                resolve_model=self.models.resolve,
                source=source,
                build=self.instantiate,
                benchmarks=list(benchmarks),
            )
            stats = run(ctx) or {}
            manifest["stats"] = {**ctx.stats, **stats}
            stage_stats(manifest["stats"], f"{stage} {comp.name}")  # what the leaderboard reads: named if wrong
        self.progress.log(f"[green]✓[/] {stage} {comp.name} ({key[:8]})")
        return self.store.get(stage, comp.name, key)

    # the pipeline ----------------------------------------------------------------------------------
    @staticmethod
    def _load(source, ctx) -> dict:
        table = conform(source.load(ctx), QUESTIONS, f"source {source.name}")
        if not table.num_rows:  # nothing downstream can use it: refused, not stored
            raise SpecError(f"source {source.name}: loaded no questions; check its settings ({source.settings})")
        write_table(table, ctx.out)
        return {"questions": table.num_rows}

    def pool(self, spec: RunSpec) -> tuple[Component, Entry]:
        source = self.instantiate("source", spec.source, "source")
        teacher = self.instantiate("teacher", spec.teacher, "teacher")

        questions = self.stage("source", source, {}, lambda ctx: self._load(source, ctx))

        def generate(ctx):
            table = conform(teacher.generate(questions.table(), ctx), TRACES, f"teacher {teacher.name}")
            if not table.num_rows:
                raise SpecError(f"teacher {teacher.name}: no traces for {questions.table().num_rows} questions")
            if table.num_rows != len(set(table.column("trace_id").to_pylist())):
                raise RuntimeError(f"teacher {teacher.name} produced duplicate trace ids")
            write_table(table, ctx.out)
            tokens = pc.sum(table.column("completion_tokens")).as_py() or 0
            return {"traces": table.num_rows, "completion_tokens": tokens,
                    "prompt_tokens": pc.sum(table.column("prompt_tokens")).as_py() or 0,
                    "complete": pc.sum(table.column("complete").cast(pa.int64())).as_py() or 0}

        return source, self.stage("teacher", teacher, {"questions": questions.key}, generate, source)

    def annotated(self, spec: RunSpec, source, pool: Entry) -> tuple[pa.Table, list[Entry]]:
        table = base = pool.table()
        entries = []
        written: dict[str, str] = {}  # column -> key of the annotation that wrote it
        for i, conf in enumerate(spec.annotators):
            ann = self.instantiate("annotator", conf, f"annotators[{i}]")
            check_requires(i, ann, written)
            inputs = self._annotator_inputs(ann, pool.key, written)
            seen = base.drop_columns([c for c in ann.requires if c in base.column_names])
            for c in ann.requires:  # the pool plus only the columns it declares: what its cache key covers
                seen = seen.append_column(c, table.column(c))

            def annotate(ctx, ann=ann, seen=seen):
                cols = ann.annotate(seen, ctx)
                if cols.column("trace_id").to_pylist() != seen.column("trace_id").to_pylist():
                    raise RuntimeError(f"annotator {ann.name} must return one row per trace, in pool order")
                write_table(cols, ctx.out)

            entry = self.stage("annotate", ann, inputs, annotate, source)
            entries.append(entry)
            columns = entry.table()
            written.update(dict.fromkeys(columns.column_names[1:], entry.key))
            for name in columns.column_names[1:]:
                if name in table.column_names:
                    table = table.set_column(table.schema.get_field_index(name), name, columns.column(name))
                else:
                    table = table.append_column(name, columns.column(name))
        return table, entries

    @staticmethod
    def _annotator_inputs(ann: Component, pool: str, written: dict[str, str]) -> dict:
        inputs = {"pool": pool}
        if ann.requires:  # outputs of earlier annotators it reads are inputs like the pool
            inputs["columns"] = {c: written[c] for c in ann.requires}
        return inputs

    def _select_inputs(self, spec: RunSpec, selector: Component, pool: str, annotations: list[str]) -> tuple[dict, list]:
        inputs = {"pool": pool, "annotations": annotations, "budget": spec.budget, "seed": spec.seed}
        benchmarks = []
        if selector.uses_benchmarks:
            benchmarks = [self.instantiate("benchmark", c, f"benchmarks[{i}]")
                          for i, c in enumerate(spec.benchmarks)]
            inputs["benchmarks"] = [{"name": b.name, **b.key_settings()} for b in benchmarks]
        return inputs, benchmarks

    @staticmethod
    def _train_inputs(spec: RunSpec, selection: str) -> dict:
        return {"selection": selection, "student": spec.student}

    # the study as a graph ----------------------------------------------------------------------------
    def plan(self, recipe: str, spec: RunSpec, until: str | None = None, base: bool = False) -> list[Node]:
        """The nodes ``run(recipe, spec, until)`` (or ``baseline(spec)`` when ``base``) builds, in an order that
        puts every node after the nodes it reads, with the keys ``run`` finds: nothing is built or read.
        Annotation columns are the annotators' declared ``columns``, as ``validate`` checks them."""
        nodes: list[Node] = []

        def add(stage, comp, inputs, deps) -> str:
            key = self.key(stage, comp, inputs)
            nodes.append(Node(stage, comp.name, key, tuple(deps), recipe, spec, base, stage in self.force))
            return key

        def evaluations(model_key, deps):
            for i, conf in enumerate(spec.benchmarks):
                add("evaluate", self.instantiate("benchmark", conf, f"benchmarks[{i}]"), {"model": model_key}, deps)
            return nodes

        if base:
            return evaluations(f"base:{spec.student}", [])
        questions = add("source", self.instantiate("source", spec.source, "source"), {}, [])
        if until == "source":
            return nodes
        pool = add("teacher", self.instantiate("teacher", spec.teacher, "teacher"), {"questions": questions},
                   [questions])
        if until == "teacher":
            return nodes
        annotations, written = [], {}
        for i, conf in enumerate(spec.annotators):
            ann = self.instantiate("annotator", conf, f"annotators[{i}]")
            key = add("annotate", ann, self._annotator_inputs(ann, pool, written), [pool, *annotations[-1:]])
            annotations.append(key)
            written.update(dict.fromkeys(ann.columns, key))
        if until == "annotate":
            return nodes
        selector = self.instantiate("selector", spec.selector, "selector")
        chosen = add("select", selector, self._select_inputs(spec, selector, pool, annotations)[0],
                     [pool, *annotations[-1:]])
        if until == "select":
            return nodes
        trained = add("train", self.instantiate("trainer", spec.trainer, "trainer"),
                      self._train_inputs(spec, chosen), [chosen])
        if until == "train":
            return nodes
        return evaluations(trained, [trained])

    def build_node(self, node: Node) -> Entry:
        """Build ``node`` (or find it stored) by the run that contains it, its inputs found in the store."""
        self._only = node.key
        force = self.force
        if not node.force:
            self.force = set()
        try:
            if node.base:
                self.baseline(node.spec)
            else:
                self.run(node.recipe, node.spec, until=None if node.stage == "evaluate" else node.stage)
        except _Reached as reached:
            return reached.args[0]
        finally:
            self._only, self.force = None, force
        raise RuntimeError(f"node {node} was not met by its run: plan and run disagree on its key")

    def validate(self, spec: RunSpec) -> None:
        """Build every component of ``spec`` before any work, so a typo costs seconds, not a run (its budget,
        seed and student were checked when the RunSpec was made)."""
        built = {kind: self.instantiate(kind, getattr(spec, kind), kind) for kind in ("source", "teacher", "trainer")}
        annotators = [self.instantiate("annotator", c, f"annotators[{i}]") for i, c in enumerate(spec.annotators)]
        for i, conf in enumerate(spec.benchmarks):
            built[f"benchmarks[{i}]"] = self.instantiate("benchmark", conf, f"benchmarks[{i}]")
        selector = self.instantiate("selector", spec.selector, "selector")
        built.update({f"annotators[{i}]": a for i, a in enumerate(annotators)}, selector=selector)
        checked = dict(built)
        for where, comp in built.items():
            for setting, (kind, conf) in comp.nested().items():
                checked[f"{where}.{setting}"] = self.instantiate(kind, conf, f"{where}.{setting}")
        for where, comp in checked.items():  # what the settings name: task names, files
            try:
                comp.check()
            except ValueError as e:
                raise SpecError(f"{where}: {e}") from None
        written: set[str] = set()
        for i, ann in enumerate(annotators):
            check_requires(i, ann, written)
            written.update(ann.columns)
        provided = set(TRACES.names) | written
        missing = [c for c in selector.requires if c not in provided]
        if missing:
            raise SpecError(
                f"selector {selector.name!r} needs column(s) {', '.join(missing)}; add an annotator that writes "
                f"them (present: {', '.join(a.name for a in annotators) or 'none'}; annotators and their columns: "
                + "; ".join(f"{n}: {', '.join(c.columns)}" for n, c in sorted(self.plugins.components['annotator'].items()))
                + ")"
            )

    def run(self, recipe: str, spec: RunSpec, until: str | None = None) -> RunResult:
        """Run every stage of ``spec`` (or up to and including ``until``)."""
        budget, seed, student = spec.budget, spec.seed, spec.student
        partial = RunResult(recipe=recipe, budget=budget, student=student, results=[])
        if until == "source":
            source = self.instantiate("source", spec.source, "source")
            partial.stages["source"] = self.stage("source", source, {}, lambda ctx: self._load(source, ctx)).key
            return partial
        source, pool = self.pool(spec)
        partial.stages["teacher"] = pool.key
        if until == "teacher":
            return partial
        table, ann_entries = self.annotated(spec, source, pool)
        ann_keys = [e.key for e in ann_entries]
        partial.stages["annotate"] = ann_keys
        if until == "annotate":
            return partial
        selector = self.instantiate("selector", spec.selector, "selector")

        def select(ctx):
            sel = conform(selector.select(table, budget, seed, ctx), SELECTION, f"selector {selector.name}")
            if sel.num_rows != table.num_rows:
                raise RuntimeError(f"selector {selector.name} must return one row per trace of the pool")
            write_table(sel, ctx.out)
            reasons = {}
            for r in sel.column("reason").to_pylist():
                reasons[r] = reasons.get(r, 0) + 1
            return {"kept": pc.sum(sel.column("kept").cast(pa.int64())).as_py() or 0, "reasons": reasons}

        inputs, benchmarks = self._select_inputs(spec, selector, pool.key, ann_keys)
        chosen = self.stage("select", selector, inputs, select, source, benchmarks)
        partial.stages["select"] = chosen.key
        reasons = chosen.manifest["stats"]["reasons"]
        self._say(f"{recipe}: selector {selector.name} kept {chosen.manifest['stats']['kept']} "
                  f"of {table.num_rows} traces — " + ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items())))
        if until == "select":
            return partial
        if not chosen.manifest["stats"]["kept"]:
            raise SpecError(f"{recipe}: selector {selector.name} kept no trace, so there is nothing to train on "
                            f"({', '.join(f'{k}: {v}' for k, v in sorted(reasons.items()))})")

        trainer = self.instantiate("trainer", spec.trainer, "trainer")

        def train(ctx):
            examples = build_examples(table, chosen.table())
            write_table(examples, ctx.out, "examples")
            system2 = pc.equal(examples.column("mode"), "system2").cast(pa.int64())
            ctx.stats["system2_examples"] = pc.sum(system2).as_py() or 0
            ctx.stats["system2_share"] = round(ctx.stats["system2_examples"] / max(examples.num_rows, 1), 4)
            return trainer.train(examples, self.models.resolve(student), ctx)

        trained = self.stage("train", trainer, self._train_inputs(spec, chosen.key), train, source)
        partial.stages["train"] = trained.key
        if until == "train":
            return partial
        results, evals, partial.per_question = self.evaluate(spec, str(trained.path / "model"), trained.key, source)
        partial.stages["evaluate"] = [e.key for e in evals]
        partial.results = results
        partial.cost = self.cost([pool, *ann_entries, chosen, trained, *evals])
        trained_stats = stats_of(trained)
        partial.examples = chosen.manifest["stats"]["kept"] if trained_stats.examples is None else trained_stats.examples
        # an annotator's one-line `summary` stat (e.g. verify: the share of fully correct traces) describes the pool
        summaries = [stats_of(e).summary for e in ann_entries]
        partial.provenance = {"pool": pool.key, "selection": chosen.key, "checkpoint": trained.key,
                              "pool_summary": "; ".join(s for s in summaries if s),
                              "system2_share": trained.manifest.get("stats", {}).get("system2_share"),
                              **trained_stats.provenance.model_dump(exclude_unset=True)}
        return partial

    def baseline(self, spec: RunSpec) -> RunResult:
        """The untrained student on the same benchmarks: the reference row."""
        student = spec.student
        results, evals, per_question = self.evaluate(spec, self.models.resolve(student), f"base:{student}", None)
        return RunResult(recipe="(base student)", budget=0, student=student, results=results, examples=0,
                         cost=self.cost(evals), stages={"evaluate": [e.key for e in evals]},
                         per_question=per_question)

    def evaluate(self, spec: RunSpec, model: str, model_key: str, source) -> tuple[list[dict], list[Entry], dict]:
        results, entries, per_question = [], [], {}
        for i, conf in enumerate(spec.benchmarks):
            bench = self.instantiate("benchmark", conf, f"benchmarks[{i}]")
            if self._only is not None and self.key("evaluate", bench, {"model": model_key}) != self._only:
                continue  # build_node: another benchmark's node; this one reads none of the others

            def evaluate(ctx, bench=bench):
                rows = result_rows(bench.evaluate(model, ctx), f"benchmark {bench.name}")
                if (ctx.out / "samples.parquet").exists():
                    conform(pq.read_table(ctx.out / "samples.parquet"), SAMPLES, f"benchmark {bench.name} samples")
                (ctx.out / "results.json").write_text(json.dumps(rows, indent=2))
                return {"rows": len(rows)}

            entry = self.stage("evaluate", bench, {"model": model_key}, evaluate, source)
            entries.append(entry)
            results += json.loads((entry.path / "results.json").read_text())
            if (entry.path / "samples.parquet").exists():
                per_question.update(per_question_values(entry.table("samples")))
        return results, entries, per_question

    @staticmethod
    def cost(entries: list[Entry]) -> dict:
        """Compute time is the sum of the stages' own wall times, whether or not they ran now.

        GPU-hours: wall time x GPUs of each stage whose stats say it ran on GPUs (``records.StageStats``:
        ``device`` "cuda" and ``gpus``); absent on CPU-only runs.
        """
        out = {"wall_s": 0.0, "teacher_tokens": 0, "train_tokens": 0}
        for e in entries:
            wall, stats = e.manifest.get("wall_s", 0.0), stats_of(e)
            out["wall_s"] += wall
            if stats.device == "cuda" and stats.gpus:
                out["gpu_hours"] = out.get("gpu_hours", 0.0) + wall * stats.gpus / 3600
            if e.stage == "teacher":
                out["teacher_tokens"] += stats.completion_tokens + stats.prompt_tokens
            if e.stage == "train":
                out["train_tokens"] += stats.train_tokens
            if stats.cost_usd is not None:
                out["cost_usd"] = round(out.get("cost_usd", 0.0) + stats.cost_usd, 4)
        out["wall_s"] = round(out["wall_s"], 1)
        if "gpu_hours" in out:
            out["gpu_hours"] = round(out["gpu_hours"], 4)
        return out
