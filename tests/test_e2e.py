"""End to end through the CLI: `compare` with a real (small) teacher, a tiny random-init student, real
SFT and real lm-eval scoring, plus a third-party plugin package installed from examples/."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

PROFILE = """
name = "tiny"
description = "seconds-scale profile for tests"
student = "tiny-llama"
budget = 4
seed = 0
[source]
name = "gym"
per_family = 2
families = ["chain_sum", "lcm", "letter_counting", "aiw"]
[teacher]
name = "hf"
model = "smollm2"
n = 2
max_new_tokens = 48
batch_size = 8
[trainer]
name = "sft"
epochs = 1
batch_size = 2
[[benchmarks]]
name = "lmeval"
limit = 6
max_gen_toks = 16
"""


@pytest.fixture(scope="module")
def example_plugin(tmp_path_factory):
    """Install examples/nt-shortest as pip would for a user, into a private target (not the venv)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target),
         str(REPO / "examples" / "nt-shortest")],
        check=True,
    )
    return target


def cli(args, env, cwd):
    return subprocess.run([sys.executable, "-m", "nt_harness.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd)


def test_compare_end_to_end_then_fully_cached(tmp_path, example_plugin, models_dir):
    profile = tmp_path / "tiny.toml"
    profile.write_text(PROFILE)
    env = {**os.environ, "PYTHONPATH": str(example_plugin), "NT_HARNESS_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "NT_HARNESS_MODELS": str(models_dir)}
    args = ["compare", "naturalthoughts", "limo", "shortest", "--profile", str(profile),
            "--workdir", str(tmp_path / "work"), "--results", str(tmp_path / "results"), "--name", "e2e", "--quiet"]
    first = cli(args, env, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    board = json.loads((tmp_path / "results" / "e2e" / "leaderboard.json").read_text())
    assert [r["recipe"] for r in board["runs"]] == ["(base student)", "naturalthoughts", "limo", "shortest"]
    for run in board["runs"]:
        metrics = {r["metric"]: r for r in run["results"]}
        assert {"exact_match", "no_answer"} <= set(metrics)
        assert metrics["exact_match"]["n"] == 6 and 0.0 <= metrics["exact_match"]["value"] <= 1.0
    for run in board["runs"][1:]:
        assert run["budget"] == 4 and run["cost"]["train_tokens"] > 0 and run["cost"]["teacher_tokens"] > 0
        assert 0 < run["examples"] <= run["budget"]  # what sft trained on, beside what the run asked for
        assert run["provenance"]["pool"] == board["runs"][1]["provenance"]["pool"]  # one shared pool
    md = (tmp_path / "results" / "e2e" / "leaderboard.md").read_text()
    assert "shortest" in md and "exact_match" in md and "±" in md

    store = tmp_path / "work" / "store"
    before = {p: p.stat().st_mtime for p in store.rglob("manifest.json")}
    again = cli(args, env, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime for p in store.rglob("manifest.json")} == before  # nothing recomputed
    rerun = json.loads((tmp_path / "results" / "e2e" / "leaderboard.json").read_text())
    assert [r["results"] for r in rerun["runs"]] == [r["results"] for r in board["runs"]]

    # the reference row alone, from the stored evaluation
    base = cli([*args[:1], "naturalthoughts", *args[4:-3], "--name", "base", "--base-only", "--quiet"], env, tmp_path)
    assert base.returncode == 0, base.stderr[-3000:]
    only = json.loads((tmp_path / "results" / "base" / "leaderboard.json").read_text())
    assert [r["recipe"] for r in only["runs"]] == ["(base student)"]
    assert only["runs"][0]["results"] == board["runs"][0]["results"]
    assert {p: p.stat().st_mtime for p in store.rglob("manifest.json")} == before

    trained = list((store / "train").iterdir())
    assert len(trained) == 3  # one checkpoint per recipe; the pool and annotations were shared
    assert len(list((store / "teacher").iterdir())) == 1
