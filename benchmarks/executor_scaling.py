"""Executors on one study, in one run: a 4-recipe study built by `local` (one stage after another),
`local-parallel` with 2 workers, and `ray` with 2 workers when a `ray` executor is installed (that column is
skipped, with a note, otherwise). Prints each executor's median wall time over the repeats, its ratio to
`local`, and its overhead per stage.

    python benchmarks/executor_scaling.py                        # stages of 2 s, 3 repeats
    python benchmarks/executor_scaling.py --stage-s 5 --repeats 5 --plugins all

The study is model-free and in this file (it is also the plugin the workers load, through an entry point in a
temporary site folder, as tests/test_executors.py does): questions -> teacher -> one annotator -> per recipe
select -> train -> evaluate, plus the base student's evaluation: 16 stages for 4 recipes, each sleeping
``--stage-s`` seconds, so a stage's own time is known and the rest is the executor's.

Overhead per stage: every repeat runs in a fresh store; the stages' own times are the ``wall_s`` of their
manifests. With one worker (`local`) it is (wall - sum of the stages' own times) / stages. With w workers the
sum is replaced by the makespan of the same graph scheduled on w workers with those same stage times (ready
stages in plan order, as `local-parallel` schedules them), and the idle worker time that remains is shared
out: (wall - ideal makespan) * w / stages. So a worker's start-up, plugin import and store access per stage
count; the graph's own limits on parallelism do not. It includes the command's fixed cost (start-up, planning,
leaderboard), which `local` pays too: the "vs local" column takes `local`'s away. Target: at most
2 s per stage, and at most 5 % of a stage's own time at the embedded default.

`--plugins minimal` (default) loads only this study and the installed executor plugins in the command and its
workers; `--plugins all` loads every installed plugin, as a user's command does (each worker imports them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import nt_harness
from nt_harness.components import Annotator, Benchmark, Selector, Settings, Source, Teacher, Trainer
from nt_harness.records import QUESTIONS, SELECTION, TRACES
from nt_harness.recipes import Profile, Recipe

HERE = Path(__file__).resolve().parent
N = 8
RECIPES = ("r1", "r2", "r3", "r4")
STAGE_S = float(os.environ.get("NT_SCALING_STAGE_S", "2"))  # read when the profile is registered; nodes carry it


# ---------------------------------------------------------------------------- the study (a plugin)

class Delay(Settings):
    delay: float = 0.0


class Numbers(Source):
    name = "scaling-numbers"
    Settings = Delay
    execution = ("delay",)  # how long a stage sleeps is not part of its key

    def load(self, ctx):
        time.sleep(self.settings.delay)
        rows = [{"question_id": f"q{i}", "source": "numbers", "question": f"{i} + 1?", "reference": str(i + 1),
                 "topic": "t", "metadata": "{}"} for i in range(N)]
        return pa.Table.from_pylist(rows, schema=QUESTIONS)


class Echo(Teacher):
    name = "scaling-echo"
    Settings = Delay
    execution = ("delay",)

    def generate(self, questions, ctx):
        time.sleep(self.settings.delay)
        rows = [{**q, "trace_id": f"{q['question_id']}/0", "teacher": "echo", "sample": 0, "thinking": "hm",
                 "answer": f"<answer>{q['reference']}</answer>", "complete": True, "finish_reason": "stop",
                 "prompt_tokens": 1, "completion_tokens": 1} for q in questions.to_pylist()]
        return pa.Table.from_pylist(rows, schema=TRACES)


class Parity(Annotator):
    name = "scaling-parity"
    columns = ("parity",)
    Settings = Delay
    execution = ("delay",)

    def annotate(self, pool, ctx):
        time.sleep(self.settings.delay)
        return pa.table({"trace_id": pool.column("trace_id"),
                         "parity": [i % 2 for i in range(pool.num_rows)]})


class Offset(Selector):
    name = "scaling-offset"

    class Settings(Settings):
        offset: int = 0
        delay: float = 0.0

    execution = ("delay",)

    def select(self, pool, budget, seed, ctx):
        time.sleep(self.settings.delay)
        ids = pool.column("trace_id").to_pylist()
        order = list(dict.fromkeys(ids[(self.settings.offset + i) % len(ids)] for i in range(budget)))
        rank = {t: r for r, t in enumerate(order)}  # SELECTION: kept 0..k-1 in order of choice, dropped -1
        return pa.table({"trace_id": ids, "kept": [t in rank for t in ids],
                         "reason": ["kept" if t in rank else "not chosen" for t in ids],
                         "rank": [rank.get(t, -1) for t in ids]}, schema=SELECTION)


class Memorize(Trainer):
    name = "scaling-memorize"
    Settings = Delay
    execution = ("delay",)

    def train(self, examples, student, ctx):
        time.sleep(self.settings.delay)
        (ctx.out / "model").mkdir()
        (ctx.out / "model" / "answers.json").write_text(json.dumps(examples.column("answer").to_pylist()))
        return {"train_tokens": examples.num_rows}


class Recall(Benchmark):
    name = "scaling-recall"
    Settings = Delay
    execution = ("delay",)

    def evaluate(self, model, ctx):
        time.sleep(self.settings.delay)
        path = Path(model) / "answers.json"
        known = set(json.loads(path.read_text())) if path.exists() else set()
        scores = [float(f"<answer>{i + 1}</answer>" in known) for i in range(N)]
        pq.write_table(pa.Table.from_pylist([{"task": "recall", "question_id": f"q{i}", "exact_match": s}
                                             for i, s in enumerate(scores)]), ctx.out / "samples.parquet")
        return [{"benchmark": "recall", "task": "recall", "metric": "exact_match", "filter": "none",
                 "value": sum(scores) / N, "stderr": 0.0, "n": N, "higher_is_better": True}]


def profile_spec(stage_s: float) -> dict:
    d = {"delay": stage_s}
    return {"source": {"name": "scaling-numbers", **d}, "teacher": {"name": "scaling-echo", **d},
            "trainer": {"name": "scaling-memorize", **d}, "student": "no-such/student",
            "benchmarks": [{"name": "scaling-recall", **d}], "budget": 2, "seed": 0}


def recipe_spec(offset: int, stage_s: float) -> dict:
    return {"annotators": [{"name": "scaling-parity", "delay": stage_s}],
            "selector": {"name": "scaling-offset", "offset": offset, "delay": stage_s}}


@nt_harness.hookimpl
def register_sources(register):
    register(Numbers)


@nt_harness.hookimpl
def register_teachers(register):
    register(Echo)


@nt_harness.hookimpl
def register_annotators(register):
    register(Parity)


@nt_harness.hookimpl
def register_selectors(register):
    register(Offset)


@nt_harness.hookimpl
def register_trainers(register):
    register(Memorize)


@nt_harness.hookimpl
def register_benchmarks(register):
    register(Recall)


@nt_harness.hookimpl
def register_recipes(register):
    register(Profile("scaling", "a model-free 4-recipe study whose stages sleep", profile_spec(STAGE_S)))
    for offset, name in enumerate(RECIPES):
        register(Recipe(name, f"{name}: traces from {offset}", recipe_spec(offset, STAGE_S)))


# ---------------------------------------------------------------------------- the measurement

def environment(site: Path, plugins: str, stage_s: float, extra: list[str], path: list[str]) -> tuple[dict, dict]:
    """The commands' environment (this file as the entry point `scaling`, and ``extra`` NAME=MODULE entry points:
    a plugin not installed yet, found on ``path``) and the installed executors (name -> plugin that registered it)."""
    dist = site / "nt_scaling-1.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: nt-scaling\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[nt_harness]\n" + "".join(f"{e.replace('=', ' = ', 1)}\n"
                                                                       for e in ["scaling=executor_scaling", *extra]))
    folders = [str(site), str(HERE), *(str(Path(p).resolve()) for p in path), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(folders),
           "NT_SCALING_STAGE_S": str(stage_s), "NT_HARNESS_THREADS": "1"}
    env.pop("NT_HARNESS_LOAD_PLUGINS", None)
    listed = json.loads(subprocess.run([sys.executable, "-m", "nt_harness.cli", "plugins", "--json"], env=env,
                                       capture_output=True, text=True, check=True).stdout)
    executors = {name: p["name"] for p in listed["plugins"] for name in p.get("registered", {}).get("executor", [])}
    if plugins == "minimal":
        env["NT_HARNESS_LOAD_PLUGINS"] = ",".join(sorted({"scaling", *executors.values()}))
    return env, executors


def executor_args(name: str, workers: int, executors: dict, env: dict) -> list[str] | None:
    """The CLI arguments for ``name`` with ``workers`` at once, or None when it is not installed."""
    if name == "local":
        return []
    if name not in executors:
        return None
    from nt_harness.plugins import Plugins

    sys.path[:0] = [p for p in env["PYTHONPATH"].split(os.pathsep) if p and p not in sys.path]  # the same plugins
    cls = Plugins().components["executor"][name]
    fields = set(getattr(cls, "Settings").model_fields)
    args = ["--executor", name]
    if "workers" in fields:
        args += ["--set", f"executor.workers={workers}"]
    elif "local_cpus" in fields:  # ray: a local cluster of `workers` CPUs, each stage a task of one CPU
        args += ["--set", f"executor.local_cpus={workers}"]
    elif "stages" in fields:  # a resource request per stage: one CPU each
        per_stage = ", ".join(f"{s} = {{num_cpus = 1}}" for s in
                              ("source", "teacher", "annotate", "select", "train", "evaluate"))
        args += ["--set", f"executor.stages={{{per_stage}}}"]
    return args


def plan(stage_s: float):
    """The study's nodes as the CLI plans them (this process, no entry points)."""
    import nt_executors
    from nt_harness.executors import plan_study
    from nt_harness.pipeline import Pipeline
    from nt_harness.plugins import Plugins
    from nt_harness.progress import Progress
    from nt_harness.recipes import RunSpec, merge
    from nt_harness.store import Store

    pm = Plugins(load_entrypoints=False, extra=[sys.modules[__name__], nt_executors])
    profile = profile_spec(stage_s)
    runs = [(r, RunSpec.of(merge(profile, recipe_spec(i, stage_s))), False) for i, r in enumerate(RECIPES)]
    with tempfile.TemporaryDirectory() as tmp:
        pipe = Pipeline(pm, Store(tmp), Progress(disable=True), threads=1)
        return plan_study(pipe, [("(base student)", runs[0][1], True), *runs])


def makespan(nodes, seconds: dict, workers: int) -> float:
    """The wall time of the graph on ``workers`` with no overhead: ready nodes started in plan order."""
    pending, done, running, now = list(nodes), set(), [], 0.0  # running: (end, key)
    while pending or running:
        ready = [n for n in pending if all(d in done for d in n.deps)]
        for node in ready[:workers - len(running)]:
            pending.remove(node)
            running.append((now + seconds[node.key], node.key))
        running.sort()
        now, key = running.pop(0)
        done.add(key)
    return now


def measure(name, args, env, nodes, workers, tmp: Path, repeat: int) -> dict:
    workdir = tmp / f"{name}-{repeat}"
    cmd = [sys.executable, "-m", "nt_harness.cli", "compare", *RECIPES, "--profile", "scaling", "--name", "x",
           "--workdir", str(workdir), "--results", str(workdir / "results"), "--quiet", *args]
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    from nt_harness.store import Store

    store = Store(workdir)
    seconds = {n.key: json.loads((store.path(n.stage, n.component, n.key) / "manifest.json").read_text())["wall_s"]
               for n in nodes}  # a missing manifest: the plan here is not the command's
    own = sum(seconds.values())
    ideal = makespan(nodes, seconds, workers)
    return {"wall": wall, "own": own, "ideal": ideal, "overhead": (wall - ideal) * workers / len(nodes)}


def embedded_stages() -> int | None:
    """How many stages the embedded default's `compare naturalthoughts limo` plans (None if it cannot say)."""
    code = ("import sys; from nt_harness.cli import plugins, make_spec, resolve_recipe; "
            "from nt_harness.executors import plan_study; from nt_harness.pipeline import Pipeline; "
            "from nt_harness.progress import Progress; from nt_harness.store import Store; import tempfile\n"
            "pm = plugins(); opts = {'profile': 'embedded', 'set': ()}\n"
            "specs = [(r, make_spec(pm, resolve_recipe(pm, r), opts, None)) for r in ('naturalthoughts', 'limo')]\n"
            "pipe = Pipeline(pm, Store(tempfile.mkdtemp()), Progress(disable=True), threads=1)\n"
            "print(len(plan_study(pipe, [('b', specs[0][1], True)] + [(r, s, False) for r, s in specs])))")
    env = {k: v for k, v in os.environ.items() if k != "NT_HARNESS_LOAD_PLUGINS"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    return int(done.stdout.split()[-1]) if done.returncode == 0 and done.stdout.split() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage-s", type=float, default=2.0, help="seconds each stage sleeps")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--plugins", choices=("minimal", "all"), default="minimal")
    parser.add_argument("--executors", default="local,local-parallel,ray")
    parser.add_argument("--add-plugin", action="append", default=[], metavar="NAME=MODULE",
                        help="an entry point for a plugin not installed yet, e.g. cluster=nt_cluster")
    parser.add_argument("--path", action="append", default=[], help="a folder for --add-plugin's module")
    parser.add_argument("--embedded-cold-s", type=float, default=383.0,
                        help="the embedded default's cold `compare naturalthoughts limo` (README: 383 s on 2 cores)")
    a = parser.parse_args()

    nodes = plan(a.stage_s)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env, installed = environment(tmp / "site", a.plugins, a.stage_s, a.add_plugin, a.path)
        columns, notes = [], []
        for name in a.executors.split(","):
            workers = 1 if name == "local" else a.workers
            args = executor_args(name, workers, installed, env)
            if args is None:
                notes.append(f"{name}: skipped, no `{name}` executor is installed "
                             f"(installed: {', '.join(sorted(installed))})")
                continue
            columns.append((name, workers, args))
        print(f"{len(nodes)} stages of {a.stage_s:g} s each (4 recipes + the base student), {a.repeats} repeats, "
              f"plugins: {a.plugins}, {os.cpu_count()} CPUs; a fresh store per run", flush=True)
        results = {}
        for repeat in range(a.repeats):  # interleaved, so a busy spell on a shared machine hits every column
            for name, workers, args in columns:
                r = measure(name, args, env, nodes, workers, tmp, repeat)
                results.setdefault(name, []).append(r)
                print(f"  repeat {repeat + 1} {name:<15} wall {r['wall']:6.1f} s  stages' own {r['own']:6.1f} s  "
                      f"ideal {r['ideal']:6.1f} s  overhead/stage {r['overhead']:5.2f} s", flush=True)

    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in results.items()}
    local = med.get("local")
    print(f"\nmedians over {a.repeats} repeats:")
    print(f"{'executor':<15} {'workers':>7} {'wall s':>7} {'ratio':>6} {'ideal s':>7} {'own s':>6} "
          f"{'overhead/stage s':>16} {'vs local s':>10}")
    for name, workers, _ in columns:
        m = med[name]
        ratio = f"{m['wall'] / local['wall']:.2f}" if local else "-"
        vs = f"{m['overhead'] - local['overhead']:+.2f}" if local else "-"
        print(f"{name:<15} {workers:>7} {m['wall']:7.1f} {ratio:>6} {m['ideal']:7.1f} {m['own']:6.1f} "
              f"{m['overhead']:16.2f} {vs:>10}")
    for note in notes:
        print(note)
    stages = embedded_stages()
    if stages:
        per = a.embedded_cold_s / stages
        print(f"\ntarget: <= 2 s per stage and <= 5 % of a stage's own time at the embedded default: its cold "
              f"`compare naturalthoughts limo` plans {stages} stages in {a.embedded_cold_s:g} s, {per:.1f} s a "
              f"stage on average, 5 % = {0.05 * per:.2f} s")
        for name, workers, _ in columns:
            if name != "local":
                extra = med[name]["overhead"] - local["overhead"] if local else med[name]["overhead"]
                print(f"  {name}: {extra:+.2f} s per stage over local = {100 * extra / per:.1f} % of the mean stage "
                      f"({'within' if extra <= min(2.0, 0.05 * per) else 'over'} the target)")


if __name__ == "__main__":
    main()
