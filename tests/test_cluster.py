"""The `ray` and `slurm` executors (plugins/nt_cluster) on the model-free study of tests/study_plugin.py: the
same leaderboard as `local` under a real local Ray cluster and under submitit's local executor standing in for
Slurm (real subprocesses), the sbatch parameters of each stage as submitit writes them, `--dry-run`, and a
failure as one line. Workers find the study plugin as those of local-parallel do: PYTHONPATH and
NT_HARNESS_LOAD_PLUGINS, which the executors pass on (Ray's runtime_env; submitit's jobs inherit them)."""

import os
import stat

import pytest

from nt_harness.pipeline import Node
from study_plugin import installed_env
from test_executors import builds, cli, leaderboard

from nt_cluster.slurm_executor import SlurmExecutor, minutes

NEEDS_RAY = "ray is not installed (pip install 'nt-harness[cluster]')"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The environment of a command that sees the study plugin and the executors, local and cluster."""
    return installed_env(tmp_path_factory.mktemp("site"), "study,executors,cluster", RAY_DEDUP_LOGS="0")


@pytest.fixture(scope="module")
def serial(tmp_path_factory, env):
    """The three recipes under `local`: the leaderboard the others must give."""
    tmp = tmp_path_factory.mktemp("serial")
    cli(["compare", "a", "b", "c", "--name", "x"], env, tmp / "w", tmp / "r")
    return leaderboard(tmp / "r" / "x")


RAY = ["--executor", "ray", "--set", "executor.local_cpus=2", "--set", "executor.stages.train.num_cpus=1",
       "--set", "executor.stages.evaluate.memory=64M"]


def test_ray_gives_the_local_leaderboard(tmp_path, env, serial):
    """A local Ray cluster of 2 CPUs, started by the command (no executor.address) and stopped after it."""
    pytest.importorskip("ray", reason=NEEDS_RAY)
    done = cli(["compare", "a", "b", "c", "--name", "x", *RAY], env, tmp_path / "w", tmp_path / "r")
    assert "ray task" in done.stderr
    assert leaderboard(tmp_path / "r" / "x") == serial
    built = builds(tmp_path / "w")
    assert set(built.values()) == {1} and len(built) == 1 + 1 + 3 + 4


def test_a_failing_node_under_ray_is_one_line(tmp_path, env):
    pytest.importorskip("ray", reason=NEEDS_RAY)
    failed = cli(["run", "a", "--name", "y", *RAY, "--set", "trainer.delay=-1"], env, tmp_path / "f",
                 tmp_path / "r", code=2)
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in failed.stderr.split("error:")[-1], failed.stderr[-3000:]
    assert "error: train memorize" in errors[0] and "of a failed in its Ray task: ValueError: sleep length " \
                                                     "must be non-negative" in errors[0]
    assert not (tmp_path / "r" / "y").exists()


def test_submitit_local_jobs_give_the_local_leaderboard(tmp_path, env, serial):
    pytest.importorskip("submitit")
    slurm = ["--executor", "slurm", "--set", "executor.cluster=local", "--set", "executor.poll_s=0.2"]
    done = cli(["compare", "a", "b", "c", "--name", "x", *slurm], env, tmp_path / "w", tmp_path / "r")
    assert ", job " in done.stderr
    assert leaderboard(tmp_path / "r" / "x") == serial
    built = builds(tmp_path / "w")
    assert set(built.values()) == {1} and len(built) == 1 + 1 + 3 + 4
    assert len(list((tmp_path / "w" / "slurm").glob("*/*_submitted.pkl"))) == 12  # a job per node


SETTINGS = {"account": "lab", "partition": "cpu", "time": "4:00:00", "setup": ["module load cuda/12.4"],
            "sbatch": {"qos": "normal"},
            "stages": {"train": {"partition": "gpu", "gpus": 8, "cpus": 64, "time": "1-00:00:00", "mem": "512G",
                                 "sbatch": {"constraint": "h100"}},
                       "evaluate": {"partition": "gpu", "gpus": 1, "cpus": 8, "time": 90}}}
EXPECTED = {  # stage -> the sbatch flags submitit writes for it, beside --job-name and submitit's own
    "teacher": ["--account=lab", "--nodes=1", "--partition=cpu", "--qos=normal", "--time=240"],
    "train": ["--account=lab", "--constraint=h100", "--cpus-per-task=64", "--gpus-per-node=8", "--mem=512G",
              "--nodes=1", "--partition=gpu", "--qos=normal", "--time=1440"],
    "evaluate": ["--account=lab", "--cpus-per-task=8", "--gpus-per-node=1", "--nodes=1", "--partition=gpu",
                 "--qos=normal", "--time=90"],
}


def test_the_sbatch_parameters_submitit_gets_for_each_stage(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    executor = SlurmExecutor(SlurmExecutor.Settings(**SETTINGS, folder=str(tmp_path / "logs" / "%j")))
    study = type("S", (), {"workdir": str(tmp_path)})()
    # submitit's SlurmExecutor wants srun on PATH, nothing more, to write a job's script: a stand-in srun
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 1\n")
    (fake / "srun").chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    for stage, expected in EXPECTED.items():
        node = Node(stage, "c", f"{stage}0123456789")
        flags = executor.sbatch_flags(node, study)
        assert flags == sorted([f"--job-name=nt-{stage}-{node.key[:8]}", *expected]), flags
        # what the submission path gives submitit (AutoExecutor, cluster slurm) renders the same script lines
        auto = executor.executor(node, study)
        assert isinstance(auto._executor, submitit.SlurmExecutor)
        script = auto._executor._make_submission_file_text("python -m submitit.core._submit x", "uid")
        assert [line.removeprefix("#SBATCH ") for line in script.splitlines() if line.startswith("#SBATCH ")
                if not line.split("=")[0].endswith(("output", "error", "open-mode", "signal", "wckey"))] == flags
        assert "module load cuda/12.4" in script
    assert not (tmp_path / "logs").exists()


def test_slurm_time_limits_in_minutes():
    assert [minutes(t) for t in (90, "90", "90:30", "4:00:00", "1-00:00:00", "2-12", "1-0:30")] == \
        [90, 90, 91, 240, 1440, 3600, 1470]
    with pytest.raises(ValueError):
        minutes("a day")


def test_dry_run_prints_the_jobs_and_stores_nothing(tmp_path, env):
    pytest.importorskip("submitit")
    sets = ["--set", "executor.account=lab", "--set", "executor.stages.train.gpus=8", "--set",
            "executor.stages.train.partition=gpu", "--set", 'executor.stages.train.time="24:00:00"']
    done = cli(["compare", "a", "b", "c", "--name", "x", "--executor", "slurm", "--dry-run", *sets], env,
               tmp_path / "w", tmp_path / "r")
    lines = [line.split("\t") for line in done.stdout.strip().splitlines()]
    assert [(stage, recipe) for stage, recipe, _, _ in lines] == [
        ("evaluate", "(base student)"), ("source", "a"), ("teacher", "a"),
        *[(s, r) for r in "abc" for s in ("select", "train", "evaluate")]]
    train = [flags.split() for stage, _, _, flags in lines if stage == "train"]
    assert all({"--account=lab", "--gpus-per-node=8", "--partition=gpu", "--time=1440"} <= set(f) for f in train)
    assert len({key for _, _, key, _ in lines}) == len(lines) == 12
    assert not list((tmp_path / "w").iterdir()) and not (tmp_path / "r").exists()  # no store, jobs, leaderboard
    # any executor: the nodes it would build
    plain = cli(["run", "a", "--dry-run"], env, tmp_path / "w", tmp_path / "r").stdout.splitlines()
    assert [line.split("\t")[:2] for line in plain] == [[s, "a"] for s in ("source", "teacher", "select", "train",
                                                                          "evaluate")]
    bad = cli(["run", "a", "--dry-run", "--executor", "slurm", "--set", "executor.stages.trian.gpus=1"], env,
              tmp_path / "w", code=2)
    assert "unknown stage(s) trian" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
