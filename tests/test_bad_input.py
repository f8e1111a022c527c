"""Every bad input is one clear line, no silent wrong state, nothing written outside its place.

Each case runs the real command line (click's CliRunner in this process; its own process where it needs one)
and asserts the exit code, exactly one line naming the problem, no traceback, and that the failed command
stored nothing: no store entry, no leaderboard. The workdir and its lock file may appear; they are not results.
"""

import errno
import json
import os
import socket
import subprocess
import sys
import traceback
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

import nt_harness
from nt_harness import cli as cli_module
from nt_harness.components import Source
from nt_harness.plugins import Plugins
from nt_harness.records import QUESTIONS

DATA = Path(__file__).parent / "data"
NATURAL = DATA / "natural_reasoning.jsonl"
CLI = [sys.executable, "-m", "nt_harness.cli"]
NR = ["--set", "source.name=natural_reasoning"]  # the embedded profile with NaturalReasoning questions from a file


def invoke(*args, env=None):
    """(exit code, stderr) of ``nt-harness ARGS``; an exception other than the CLI's own exit is a traceback."""
    result = CliRunner().invoke(cli_module.cli, [str(a) for a in args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        pytest.fail("traceback:\n" + "".join(traceback.format_exception(result.exception)))
    return result.exit_code, result.stderr


def stored(root: Path) -> list[str]:
    """Store entries (finished or half-written) and leaderboards under ``root``: what a failed command must not
    leave."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.name in ("manifest.json", "leaderboard.json") or p.name.startswith(".tmp-"))


def one_line(stderr: str, *fragments: str, kind: str = "error") -> str:
    """The single ``error:`` (or ``warning:``) line; it names the problem (every fragment)."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.lower().startswith(f"{kind}:")]
    assert len(lines) == 1, stderr
    for fragment in fragments:
        assert fragment in lines[0], stderr
    return lines[0]


def refused(tmp_path, *args, code=2, fragments=(), kind="error", env=None) -> str:
    """Run a command that must fail before storing anything; its one error line."""
    out, stderr = invoke(*args, "--workdir", tmp_path / "w", "--quiet", env=env)
    assert out == code, stderr
    assert stored(tmp_path) == []
    return one_line(stderr, *fragments, kind=kind)


def closed_port() -> int:
    """A local port nothing listens on: connections to it are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# spec mistakes: named at validation, before any work ---------------------------------------------------------
@pytest.mark.parametrize("args, fragments", [
    (["run", "nope"], ["unknown recipe 'nope'; available:"]),
    (["run", "random", "--profile", "nope"], ["unknown profile 'nope'"]),
    (["run", "random", "--profile", "nosuch.toml"], ["nosuch.toml: no such file"]),
    (["run", "random", "--set", "trainer.nope=1"], ["trainer: unknown key nope (known: "]),
    (["run", "random", "--set", "trainer.lr=fast"], ["trainer.lr"]),
    (["run", "random", "--set", "trainer.epochs=[1]"], ["trainer.epochs"]),
    (["run", "random", "--set", "selector.name=nope"], ["unknown selector 'nope'"]),
    (["run", "random", "--budget", "x"], ["--budget 'x'"]),
    (["run", "random", "--set", "budget=abc"], ["budget: a whole number, at least 1 (got 'abc')"]),
    (["run", "random", "--set", "budget=0"], ["budget: a whole number, at least 1 (got 0)"]),
    (["run", "random", "--set", "budget=1.5"], ["budget: a whole number, at least 1 (got 1.5)"]),
    (["run", "random", "--set", "seed=-1"], ["seed: a whole number, at least 0 (got -1)"]),
    (["run", "naturalthoughts", "--set", "annotators.system1.name=length"],
     ["needs column(s) system1_answer, system1_correct"]),
    (["run", "random", "--threads", "0"], ["--threads", "0 is not in the range"]),
    (["run", "random", "--benchmarks", "lmeval:nosuch_task"], ["benchmarks[0]", "unknown task(s) 'nosuch_task'"]),
    (["run", "random", "--set", "benchmarks.lmeval.local_data={gym_heldout = \"nosuch.jsonl\"}"],
     ["local_data: no such file nosuch.jsonl"]),
])
def test_a_spec_mistake_is_one_line_before_any_work(tmp_path, args, fragments):
    refused(tmp_path, *args, fragments=fragments)


def test_a_profile_file_that_is_not_toml_or_has_unknown_keys_is_named(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text("[source\n")
    refused(tmp_path, "run", "random", "--profile", broken, fragments=["broken.toml"])
    typo = tmp_path / "typo.toml"
    typo.write_text('[selectr]\nname = "random"\n')
    refused(tmp_path, "run", "random", "--profile", typo, fragments=["typo.toml", "selectr"])
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('description = "caf\u00e9"\n'.encode("latin-1"))
    refused(tmp_path, "run", "random", "--profile", latin1, fragments=["latin1.toml", "not UTF-8"])


@pytest.mark.parametrize("name", ["../../escape", "a/b", "..", "ABSOLUTE"])
def test_a_result_name_is_a_name_not_a_path(tmp_path, name):
    """--name ../../escape wrote a leaderboard outside results/, an absolute one anywhere: refused before work."""
    name = str(tmp_path / "elsewhere") if name == "ABSOLUTE" else name
    refused(tmp_path, "compare", "random", "--name", name, "--results", tmp_path / "results", fragments=["--name"])
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "w").exists()


def test_results_that_cannot_be_written_are_refused_before_any_work(tmp_path):
    (tmp_path / "file").write_text("")
    refused(tmp_path, "run", "random", "--results", tmp_path / "file" / "results",
            fragments=["--results", "not a writable folder"])
    assert not (tmp_path / "w").exists()


# bad paths and files ---------------------------------------------------------------------------------------
def test_a_workdir_that_cannot_be_created_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    out, stderr = invoke("questions", "random", "--workdir", tmp_path / "file" / "w", "--quiet")
    assert out == 2
    one_line(stderr, "workdir", str(tmp_path / "file" / "w"), "cannot create it")


def test_a_read_only_workdir_is_one_line(tmp_path, monkeypatch):
    """A read-only filesystem, simulated (root writes through a folder's permissions)."""
    workdir, mkdir = tmp_path / "ro" / "w", Path.mkdir

    def read_only(self, *args, **kw):
        if self == workdir:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return mkdir(self, *args, **kw)

    monkeypatch.setattr(Path, "mkdir", read_only)
    out, stderr = invoke("questions", "random", "--workdir", workdir, "--quiet")
    assert out == 2
    one_line(stderr, f"workdir {workdir}: cannot create it (Read-only file system)")


@pytest.mark.parametrize("source, content, fragments", [
    # the same refusal from every source: no stage of zero questions is stored
    ("natural_reasoning", b"", ["bad.jsonl has no rows"]),
    ("natural_reasoning", b"\n\n", ["bad.jsonl has no rows"]),
    ("limo-released", b"", ["bad.jsonl has no rows"]),
    ("natural_reasoning", NATURAL.read_bytes().splitlines(True)[0] + b'{"question": "caf\xe9?"}\n',
     ["bad.jsonl: row 2: not UTF-8 text (byte 0xe9"]),
    ("natural_reasoning", b'{"prompt": "What is 2+2?", "reference_answer": "4"}\n',
     ["bad.jsonl: row 1: no `question`", "prompt"]),
    ("natural_reasoning", b'{"question": "x"\n', ["bad.jsonl: row 1: not valid JSON"]),
    ("natural_reasoning", b"PAR1 not really", ["bad.parquet: not a readable Parquet file"]),
    ("natural_reasoning", None, ["no such file", "nosuch.jsonl"]),
])
def test_a_bad_source_file_is_one_line_naming_file_and_row(tmp_path, source, content, fragments):
    path = tmp_path / ("bad.parquet" if content and content.startswith(b"PAR1") else "bad.jsonl")
    if content is None:
        path = tmp_path / "nosuch.jsonl"
    else:
        path.write_bytes(content)
    refused(tmp_path, "questions", "random", "--set", f"source.name={source}", "--set", f"source.path={path}",
            fragments=fragments)


def test_an_unreachable_server_is_one_line_naming_its_url(tmp_path):
    """Connection refused on every request, after the client's (few) retries: the URL, not a traceback. The
    questions were fine and stay stored; the teacher stores nothing."""
    url = f"http://127.0.0.1:{closed_port()}/v1"
    out, stderr = invoke("generate", "random", *NR, "--set", f"source.path={NATURAL}", "--set", "teacher.name=openai",
                         "--set", f"teacher.base_url={url}", "--set", "teacher.model=x", "--set",
                         "teacher.api_key_env=''", "--set", "teacher.max_retries=1", "--set", "teacher.backoff_s=0.01",
                         "--workdir", tmp_path / "w", "--quiet")
    assert out == 2, stderr
    one_line(stderr, f"cannot reach {url}", "connection")
    assert [p for p in stored(tmp_path) if "/source/" not in p] == []


# the store ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncated manifest", "truncated data", "missing data"])
def test_a_damaged_store_entry_is_named_set_aside_and_rebuilt(tmp_path, damage):
    """A manifest cut to 40 bytes was taken as a stored stage and the next stage built on it."""
    args = ["questions", "random", *NR, "--set", f"source.path={NATURAL}", "--workdir", tmp_path / "w", "--quiet"]
    assert invoke(*args)[0] == 0
    (entry,) = (tmp_path / "w" / "store" / "source").iterdir()
    good = (entry / "data.parquet").read_bytes()
    if damage == "truncated manifest":
        manifest = entry / "manifest.json"
        manifest.write_bytes(manifest.read_bytes()[:40])
    elif damage == "truncated data":
        (entry / "data.parquet").write_bytes(good[: len(good) // 2])
    else:
        (entry / "data.parquet").unlink()
    out, stderr = invoke(*args)
    assert out == 0, stderr
    one_line(stderr, f"store entry {entry} is damaged", "moved to .corrupt-", kind="warning")
    (aside,) = entry.parent.glob(".corrupt-*")  # kept, not deleted, for a look
    assert aside.is_dir()
    assert (entry / "data.parquet").read_bytes() == good  # rebuilt, the same
    assert json.loads((entry / "manifest.json").read_text())["files"] == {"data.parquet": len(good)}


def test_ctrl_c_mid_stage_is_one_line_and_stores_nothing(tmp_path, monkeypatch):
    """KeyboardInterrupt inside a stage that has written half its output: nothing of it is stored."""

    class Interrupted(Source):
        name = "interrupted"

        def load(self, ctx):
            (ctx.out / "data.parquet").write_text("half")
            raise KeyboardInterrupt

    class Plugin:
        @nt_harness.hookimpl
        def register_sources(self, register):
            register(Interrupted)

    monkeypatch.setattr(cli_module, "plugins", lambda: Plugins(extra=[Plugin()]))
    refused(tmp_path, "questions", "random", "--set", "source.name=interrupted", code=130, kind="interrupted",
            fragments=["stored nothing"])
    assert not list((tmp_path / "w" / "store" / "source").iterdir())


def test_a_source_of_no_questions_is_refused_not_stored(tmp_path, monkeypatch):
    """Whatever the source: zero questions is no valid result, so no stage of zero rows is stored."""

    class Nothing(Source):
        name = "nothing"

        def load(self, ctx):
            return pa.Table.from_pylist([], schema=QUESTIONS)

    class Plugin:
        @nt_harness.hookimpl
        def register_sources(self, register):
            register(Nothing)

    monkeypatch.setattr(cli_module, "plugins", lambda: Plugins(extra=[Plugin()]))
    refused(tmp_path, "questions", "random", "--set", "source.name=nothing", fragments=["source nothing: loaded no "
                                                                                      "questions"])


# tracebacks on request, plugins that break -----------------------------------------------------------------------
@pytest.mark.parametrize("how", [["--debug"], "NT_HARNESS_DEBUG"])
def test_debug_shows_the_traceback(tmp_path, how):
    args, env = (how, None) if isinstance(how, list) else ([], {how: "1"})
    result = CliRunner().invoke(cli_module.cli, [*args, "run", "nope", "--workdir", str(tmp_path / "w")], env=env)
    assert type(result.exception).__name__ == "PluginError"  # raised through, for its traceback


def test_a_broken_third_party_plugin_is_one_warning_and_the_rest_work(tmp_path):
    """A plugin whose import fails, installed through its entry point: a warning naming it, and the command's own
    one-line error when its component is asked for. Its own process: entry points are read at start."""
    (tmp_path / "broken_nt_plugin.py").write_text("import no_such_module_anywhere\n")
    info = tmp_path / "broken_nt_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-nt-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[nt_harness]\nbroken = broken_nt_plugin\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(CLI + ["run", "random", "--set", "selector.name=broken-pick", "--workdir", str(tmp_path / "w"),
                                "--quiet"], capture_output=True, text=True, env=env)
    assert out.returncode == 2, out.stderr
    one_line(out.stderr, "plugin 'broken'", "failed to load", "No module named 'no_such_module_anywhere'",
             kind="warning")
    one_line(out.stderr, "unknown selector 'broken-pick'")
    assert stored(tmp_path) == []
