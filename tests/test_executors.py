"""The study as a graph of stages, the executors that build it, and a store many processes share.

The study is tests/study_plugin.py: model-free components, installed as a plugin for the commands here
(workers of `local-parallel` load plugins from entry points); its stages log their builds to builds.log."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

import study_plugin
from study_plugin import installed_env
from nt_harness.executors import plan_study
from nt_harness.pipeline import Pipeline
from nt_harness.plugins import Plugins
from nt_harness.progress import Progress
from nt_harness.recipes import RunSpec, merge
from nt_harness.store import Store



@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The environment of a command that sees the study plugin, and only it and the executors."""
    return installed_env(tmp_path_factory.mktemp("site"), "study,executors")


def command(args, env, workdir, results=None):
    return [sys.executable, "-m", "nt_harness.cli", *args, "--profile", "study", "--workdir", str(workdir),
            "--quiet", *(["--results", str(results)] if results else [])]


def cli(args, env, workdir, results=None, code=0) -> subprocess.CompletedProcess:
    done = subprocess.run(command(args, env, workdir, results), capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == code, done.stderr[-3000:]
    return done


def builds(workdir: Path, what: str = "done") -> Counter:
    """(stage, key) -> how many times it was built (``what``: done) or started (start)."""
    log = workdir / "builds.log"
    lines = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
    return Counter((stage, key) for stage, w, key, _ in lines if w == what)


def leaderboard(folder: Path) -> dict:
    """The leaderboard's JSON without what differs between any two runs of one command: when and how long."""
    data = json.loads((folder / "leaderboard.json").read_text())
    for key in ("created", "wall_s", "command"):
        data.pop(key)
    for run in data["runs"]:
        run["cost"].pop("wall_s")
    return data


def pipeline(tmp_path) -> tuple[Pipeline, Plugins]:
    import nt_executors

    pm = Plugins(load_entrypoints=False, extra=[study_plugin, nt_executors])
    return Pipeline(pm, Store(tmp_path), Progress(disable=True), threads=1), pm


def specs(pm) -> list[tuple[str, RunSpec, bool]]:
    profile = pm.profiles["study"].spec
    return [(r, RunSpec.of(merge(profile, pm.recipes[r].spec)), False) for r in ("a", "b", "c")]


def test_the_plan_lists_a_shared_stage_once_with_the_keys_the_runs_find(tmp_path):
    pipe, pm = pipeline(tmp_path)
    runs = specs(pm)
    nodes = plan_study(pipe, [("(base student)", runs[0][1], True), *runs])
    assert Counter(n.stage for n in nodes) == {"source": 1, "teacher": 1, "select": 3, "train": 3, "evaluate": 4}
    seen = set()
    for node in nodes:  # each after what it reads
        assert set(node.deps) <= seen, node
        seen.add(node.key)
    assert not (tmp_path / "store").exists()  # planning builds nothing
    for recipe, spec, _ in runs:
        stages = pipe.run(recipe, spec).stages
        planned = {n.stage: n.key for n in pipe.plan(recipe, spec)}
        assert planned == {"source": planned["source"], "teacher": stages["teacher"], "select": stages["select"],
                           "train": stages["train"], "evaluate": stages["evaluate"][0]}
    assert pipe.plan("a", runs[0][1], until="teacher")[-1].stage == "teacher"


def test_build_node_builds_that_node_only_and_needs_its_inputs(tmp_path):
    pipe, pm = pipeline(tmp_path)
    (recipe, spec, _), *_ = specs(pm)
    source, teacher, select, train, evaluate = pipe.plan(recipe, spec)
    with pytest.raises(RuntimeError, match="a node ran before its inputs"):
        pipe.build_node(select)
    for node in (source, teacher, select):
        pipe.build_node(node)
    assert set(builds(tmp_path)) == {("source", source.key), ("teacher", teacher.key)}
    assert not (tmp_path / "store" / "train").exists()


def test_local_and_local_parallel_give_the_same_leaderboard(tmp_path, env):
    """Three recipes: one after another in this process, and two at a time in worker processes."""
    cli(["compare", "a", "b", "c", "--name", "x"], env, tmp_path / "serial", tmp_path / "r1")
    done = cli(["compare", "a", "b", "c", "--name", "x", "--executor", "local-parallel", "--set",
                "executor.workers=2"], env, tmp_path / "parallel", tmp_path / "r2")
    assert "worker pid" in done.stderr
    parallel = leaderboard(tmp_path / "r2" / "x")
    assert parallel == leaderboard(tmp_path / "r1" / "x")
    assert [r["recipe"] for r in parallel["runs"]] == ["(base student)", "a", "b", "c"]
    assert len({r["results"][0]["value"] for r in parallel["runs"]}) > 1  # the recipes did differ
    built = builds(tmp_path / "parallel")
    assert set(built.values()) == {1} and len(built) == 1 + 1 + 3 + 4  # source, teacher, trains, evaluations
    # the same command again: everything is stored, nothing built, the same leaderboard (timings aside)
    cli(["compare", "a", "b", "c", "--name", "x"], env, tmp_path / "parallel", tmp_path / "r3")
    assert builds(tmp_path / "parallel") == built
    assert leaderboard(tmp_path / "r3" / "x") == parallel


def test_a_worker_killed_mid_stage_stores_nothing_and_a_rerun_builds_it_once(tmp_path, env):
    hang = tmp_path / "hang"
    hang.write_text("")
    workdir = tmp_path / "w"
    args = ["compare", "a", "b", "--executor", "local-parallel", "--name", "x"]
    proc = subprocess.Popen(command(args, env, workdir, tmp_path / "r"), env={**env, "NT_STUDY_HANG": str(hang)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid_file = Path(f"{hang}.pid")
    deadline = time.time() + 120
    while not (pid_file.exists() and pid_file.read_text()) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert pid_file.exists(), proc.communicate()[1][-3000:]
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr[-3000:]
    assert "died (killed by signal 9)" in stderr and "Traceback" not in stderr
    # started, never done: the killed one, and the other recipe's training when both ran at once (stopped then)
    killed = builds(workdir, "start") - builds(workdir)
    assert killed and {stage for stage, _ in killed} == {"train"}
    for _, key in killed:
        assert not list((workdir / "store" / "train").glob(f"memorize-{key}"))  # nothing of it stored

    cli(args, env, workdir, tmp_path / "r")
    built = builds(workdir)
    assert all(built[("train", key)] == 1 for _, key in killed) and set(built.values()) == {1}
    assert not [p for p in (workdir / "store").rglob(".tmp-*")]  # the killed worker's temp folder is cleared


def test_two_compares_at_once_build_each_shared_stage_once(tmp_path, env):
    """`a b` and `b c` on one store, started together: source, teacher, b's stages and the base student's
    evaluation are both commands' and are built once; the slow teacher makes them meet on it."""
    workdir = tmp_path / "w"
    slow = ["--set", "teacher.delay=1.5", "--set", "trainer.delay=0.3"]
    procs = [subprocess.Popen(command(["compare", *recipes, "--name", name, *slow, *executor], env, workdir,
                                      tmp_path / "r"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
             for recipes, name, executor in [(("a", "b"), "ab", []),
                                              (("b", "c"), "bc", ["--executor", "local-parallel"])]]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-3000:] for _, e in outs]
    built = builds(workdir)
    assert set(built.values()) == {1}, built
    assert Counter(stage for stage, _ in built) == {"source": 1, "teacher": 1, "train": 3, "evaluate": 4}
    assert builds(workdir, "start")[next(k for k in built if k[0] == "teacher")] == 1
    ab, bc = leaderboard(tmp_path / "r" / "ab"), leaderboard(tmp_path / "r" / "bc")
    assert ab["runs"][2] == bc["runs"][1]  # b's row, whoever built it


def test_a_stage_another_process_builds_is_waited_for_not_built_again(tmp_path, env):
    pipe, pm = pipeline(tmp_path / "w")
    source = pipe.plan("a", specs(pm)[0][1], until="source")[0]
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from nt_harness.store import Store
        with Store({str(tmp_path / "w")!r}).building("source", {source.component!r}, {source.key!r}):
            print("locked", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        waiting = subprocess.Popen(command(["questions", "a"], env, tmp_path / "w"), env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(8)
        assert waiting.poll() is None  # waits while the other holds the stage's lock
    finally:
        holder.kill()  # dies holding it: the OS releases the lock
        holder.wait()
    _, stderr = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, stderr[-3000:]
    assert "is being built by another" in stderr and "waiting for it" in stderr
    assert builds(tmp_path / "w") == {("source", source.key): 1}


def test_plugins_lists_the_executors_and_a_bad_one_is_one_line(tmp_path, env):
    listed = json.loads(subprocess.run([sys.executable, "-m", "nt_harness.cli", "plugins", "--json"], env=env,
                                       capture_output=True, text=True, check=True).stdout)
    executors = next(p for p in listed["plugins"] if p["name"] == "executors")
    assert executors["registered"] == {"executor": ["local", "local-parallel"]}
    for args, message in [(["--executor", "nope"], "error: unknown executor 'nope'; available: local, "
                                                   "local-parallel"),
                          (["--executor", "local-parallel", "--set", "executor.workers=0"],
                           "error: invalid settings for executor 'local-parallel': executor.workers:"),
                          (["--set", "executor.wokers=2", "--executor", "local-parallel"],
                           "executor: unknown key wokers (known: workers, threads)")]:
        done = cli(["run", "a", *args], env, tmp_path / "w", code=2)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], done.stderr
    assert not (tmp_path / "w" / "store").exists()
