"""The `openai` teacher: reasoning traces from any OpenAI-compatible server (DeepSeek's API, vLLM's or
SGLang's server, llama.cpp, hosted providers), resumable and fault-tolerant.

Requests (one per question, carrying its n samples through the ``n`` parameter, or one per sample) are
ordered question by question and cut into fixed shards. All requests run through one event loop at the
given concurrency, spread over the servers when base_url lists several, and each shard is written to
ctx.scratch as soon as its requests are done, so a run killed at any point loses only its in-flight
requests. A request that still fails after its retries is written as a row with ``finish_reason``
"error: <kind>"; a restart sends only those again.

``reasoning_tokens`` is the server's own count of a trace's thinking tokens
(``usage.completion_tokens_details.reasoning_tokens``, which DeepSeek's and OpenAI's APIs return), null where the
server gives none or it cannot be a trace's own (records.py: the optional column; see ``reported_reasoning``).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from nt_harness import UserError
from nt_harness.components import Context, Settings, Teacher
from nt_harness.progress import Progress
from nt_harness.records import QUESTIONS, TRACES, trace_id
from nt_harness.seeds import request_seed
from nt_harness.shards import run_sharded
from nt_harness.traces import split_trace
from nt_openai.client import Caller, Choice, Refused, Reply

# what a fatal status (client.FATAL_STATUS) means for the user; the server's own message may quote the key
FATAL_REASONS = {401: "wrong or missing API key (api_key_env)", 403: "this key has no access to the model",
                 404: "no such model or endpoint: check model and base_url"}
ERROR = "error: "  # finish_reason prefix of a request that failed after its retries
# TRACES plus what an API run costs: per-trace share of the request's price and the attempts it took
API_TRACES = pa.schema(list(TRACES) + [("cost_usd", pa.float64()), ("attempts", pa.int32()),
                                        ("reasoning_tokens", pa.int32())])


def read_choice(choice: Choice, think_start: str, think_end: str) -> tuple[str, str, bool]:
    """(thinking, answer, complete) of one choice. ``complete``: the thinking ended on its own.

    A separate reasoning field wins; otherwise the text is split at the think tags. A response cut off
    (finish_reason "length") before the end of its thinking has no answer: all its text is thinking.
    """
    cut = choice.finish_reason == "length"
    if choice.reasoning:
        answer = choice.text.strip()
        if cut and not answer:
            return choice.reasoning.strip(), "", False
        return choice.reasoning.strip(), answer, True
    thinking, answer, ended = split_trace(choice.text, think_start, think_end)
    if ended or not cut:
        return thinking, answer, True
    return thinking or answer, "", False


def reported_reasoning(usage: Any, choices: int, thinking: str) -> int | None:
    """The server's reasoning-token count (``usage.completion_tokens_details.reasoning_tokens``) as one trace's,
    or None: when the server sends none; when the request had several choices (the count is their sum and
    cannot be shared out exactly); when it contradicts the text (tokens for hidden reasoning with no thinking
    kept, or 0 from a server that does not parse the think tags it returned)."""
    details = getattr(usage, "completion_tokens_details", None)
    count = getattr(details, "reasoning_tokens", None)
    if not isinstance(count, int) or choices != 1 or (count > 0) != bool(thinking):
        return None
    return count


def split_tokens(total: int, choices: list[Choice]) -> list[int]:
    """The request's billed completion tokens shared out by text length (servers bill n choices as one)."""
    if len(choices) == 1:
        return [total]
    lengths = [len(c.text) + len(c.reasoning or "") for c in choices]
    if not any(lengths):
        lengths = [1] * len(choices)
    shares = [total * n // sum(lengths) for n in lengths]
    shares[0] += total - sum(shares)
    return shares


class OpenAITeacher(Teacher):
    name = "openai"
    version = "2"  # 2: reasoning_tokens
    description = "reasoning traces from any OpenAI-compatible server (DeepSeek, vLLM, SGLang, llama.cpp), resumable"
    # prices stay in the key: each trace's cost_usd is written with it
    execution = ("api_key_env", "concurrency", "max_retries", "backoff_s", "max_backoff_s", "timeout_s",
                 "requests_per_minute", "tokens_per_minute", "max_failed_share", "cooldown_s")

    class Settings(Settings):
        base_url: str | list[str] = Field(
            "http://127.0.0.1:8000/v1",
            description="the server's /v1 address (vLLM's default), or a list of replicas serving the same model",
        )
        model: str = Field(description="model name as the server knows it")
        api_key_env: str = Field(
            "OPENAI_API_KEY",
            description="NAME of the environment variable holding the key (never the key); '' = no key",
        )
        endpoint: Literal["chat", "completions"] = "chat"
        n: int = Field(1, ge=1, description="samples per question")
        use_n: bool = Field(True, description="send n in one request; false: one request per sample")
        # DeepSeek-R1 model card, "Usage Recommendations": temperature 0.5-0.7 (0.6 recommended), top-p 0.95
        temperature: float = Field(0.6, ge=0)
        top_p: float = Field(0.95, gt=0, le=1)
        # Always sent: server defaults truncate reasoning (vLLM's max_tokens default is 16). 32,768 is
        # DeepSeek-R1's maximum generation length (DeepSeek-R1 paper, §3.1 evaluation setup).
        max_tokens: int = Field(32768, ge=1, description="thinking + answer budget per sample")
        seed: int | None = Field(0, description="per-request seeds derive from it; None = send none")
        stop: list[str] | None = None
        extra_body: dict[str, Any] = Field(default_factory=dict, description="extra JSON fields for the server")
        # DeepSeek-R1 model card: "avoid adding a system prompt; all instructions should be within the user prompt"
        system_prompt: str | None = None
        prompt_template: str = Field("{question}", description="completions endpoint: the prompt; {question} is replaced")
        think_start: str = "<think>"
        think_end: str = "</think>"
        concurrency: int = Field(8, ge=1, description="requests in flight")
        shard_requests: int | None = Field(None, ge=1, description="requests per shard; None = 4 × concurrency")
        max_retries: int = Field(6, ge=0)
        backoff_s: float = Field(1.0, gt=0, description="first backoff window; doubles per retry, full jitter")
        max_backoff_s: float = Field(60.0, gt=0)
        timeout_s: float = Field(600.0, gt=0, description="per attempt; long reasoning needs minutes")
        requests_per_minute: float | None = Field(None, gt=0, description="None = unlimited")
        tokens_per_minute: float | None = Field(None, gt=0, description="None = unlimited")
        price_per_m_input: float = Field(0.0, ge=0, description="USD per million prompt tokens")
        price_per_m_output: float = Field(0.0, ge=0, description="USD per million completion tokens")
        cooldown_s: float = Field(10.0, gt=0, description="a server that failed (connection, timeout, 5xx) "
                                  "gets no requests for this long while another is up")
        max_failed_share: float = Field(
            0.05, ge=0, le=1,
            description="more failed requests than this fails the stage (answered ones stay for the rerun)",
        )

        @field_validator("base_url")
        @classmethod
        def _one_url_each(cls, value: str | list[str]) -> str | list[str]:
            """Several servers are a TOML list; comma-separated text would be sent as one broken URL."""
            urls = [value] if isinstance(value, str) else value
            if not urls:
                raise ValueError("base_url: give at least one server")
            for url in urls:
                if "," in url:
                    raise ValueError(f"base_url {url!r} holds a comma: several servers are a TOML list, e.g. "
                                     f"--set 'teacher.base_url=[\"http://a:8000/v1\",\"http://b:8000/v1\"]'")
            if len(set(urls)) < len(urls):
                raise ValueError(f"base_url lists a server twice: {urls}")
            return value

    @property
    def servers(self) -> list[str]:
        base = self.settings.base_url
        return [base] if isinstance(base, str) else list(base)

    def key_settings(self) -> dict:
        """A list of servers holds replicas of one model (``model`` is in the key): which of them answer is
        execution, like concurrency, so a stopped run resumes on other nodes. A single base_url stays in the
        key: it may name a provider, whose traces are its own, and stored pools keep their keys."""
        key = super().key_settings()
        if isinstance(self.settings.base_url, list):
            del key["base_url"]
        return key

    def _api_key(self) -> str:
        name = self.settings.api_key_env
        if not name:
            return "EMPTY"  # servers without auth ignore it; the SDK insists on one
        key = os.environ.get(name)
        if not key:
            raise UserError(f"teacher openai: environment variable {name} is not set (it should hold the API "
                               f"key; set api_key_env = \"\" for a server without authentication)")
        return key

    def _request(self, question: str, question_id: str, first: int, count: int) -> dict:
        s = self.settings
        body: dict[str, Any] = {"model": s.model, "n": count, "temperature": s.temperature, "top_p": s.top_p,
                                "max_tokens": s.max_tokens}
        if s.endpoint == "chat":
            system = [{"role": "system", "content": s.system_prompt}] if s.system_prompt else []
            body["messages"] = system + [{"role": "user", "content": question}]
        else:
            body["prompt"] = s.prompt_template.replace("{question}", question)
        if s.seed is not None:
            body["seed"] = request_seed(s.seed, question_id, first)
        if s.stop:
            body["stop"] = list(s.stop)
        if s.extra_body:
            body["extra_body"] = dict(s.extra_body)
        return body

    def generate(self, questions: pa.Table, ctx: Context) -> pa.Table:
        s = self.settings
        api_key = self._api_key()
        qrows = questions.select(QUESTIONS.names).to_pylist()
        per_call = s.n if s.use_n else 1
        calls = [(q, k) for q in range(len(qrows)) for k in range(0, s.n, per_call)]
        size = s.shard_requests or 4 * s.concurrency
        shards = [calls[i:i + size] for i in range(0, len(calls), size)]
        ids = [[trace_id(qrows[q]["question_id"], k + j) for q, k in shard for j in range(per_call)]
               for shard in shards]
        requests = _ShardedRequests(self, qrows, shards, per_call, api_key)
        progress = ctx.progress or Progress(disable=True)
        try:
            with progress.task(f"teacher openai ({s.model})", total=len(calls) * per_call) as advance:
                requests.advance = advance
                table, reused = run_sharded(ids, ctx.scratch, requests.run_shard, API_TRACES, advance,
                                            redo=has_failures, plan=requests.plan)
        except Refused as e:  # the client raises only the statuses no request can get past
            raise UserError(f"teacher openai: {e.url} refused the request with HTTP {e.status_code}: "
                            f"{FATAL_REASONS.get(e.status_code, 'see the server log')}") from e
        finally:
            requests.close()
        self._report(table, len(shards), reused, requests.caller, requests.done, ctx)
        return table

    def _rows(self, question: dict, first: int, count: int, reply: Reply) -> list[dict]:
        s = self.settings
        base = [{**question, "trace_id": trace_id(question["question_id"], first + j), "teacher": s.model,
                 "sample": first + j, "attempts": reply.attempts} for j in range(count)]
        if reply.error is not None:
            return [{**b, "thinking": "", "answer": "", "complete": False, "finish_reason": ERROR + reply.error,
                     "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0, "reasoning_tokens": None}
                    for b in base]
        if len(reply.choices) != count:
            raise RuntimeError(f"teacher openai: asked for n={count} and got {len(reply.choices)} choice(s); "
                               f"this server ignores n: set use_n = false")
        tokens = split_tokens(reply.completion_tokens, reply.choices)
        usage = reply.usage
        rows = []
        for b, choice, completion in zip(base, reply.choices, tokens):
            thinking, answer, complete = read_choice(choice, s.think_start, s.think_end)
            cost = (reply.prompt_tokens / count * s.price_per_m_input + completion * s.price_per_m_output) / 1e6
            rows.append({**b, "thinking": thinking, "answer": answer, "complete": complete,
                         "finish_reason": choice.finish_reason, "prompt_tokens": reply.prompt_tokens,
                         "completion_tokens": completion, "cost_usd": cost,
                         "reasoning_tokens": reported_reasoning(usage, count, thinking)})
        return rows

    def _report(self, table: pa.Table, shards: int, reused: int, caller: Caller | None, done: dict,
                ctx: Context) -> None:
        """Counts over the whole pool (so they survive restarts) go into ctx.stats and the manifest; raises
        when too many requests failed, leaving the answered ones in scratch for the rerun."""
        s = self.settings
        per_call = s.n if s.use_n else 1
        finish = table.column("finish_reason").to_pylist()
        failed = Counter(f[len(ERROR):] for f in finish if f.startswith(ERROR))
        attempts = table.column("attempts").to_pylist()[::per_call]
        elapsed = time.perf_counter() - done["started"]
        ctx.stats.update(
            requests=len(attempts), shards=shards, shards_resumed=reused,
            answered=len(finish) - sum(failed.values()), failed=dict(failed),
            retries=sum(a - 1 for a in attempts),
            retries_this_run=dict(caller.retries) if caller else {},
            servers_this_run=caller.servers.stats() if caller else {},  # attempts and failures per server
            billed_prompt_tokens=(pc.sum(table.column("prompt_tokens")).as_py() or 0) // per_call,
            billed_completion_tokens=pc.sum(table.column("completion_tokens")).as_py() or 0,
            cost_usd=round(pc.sum(table.column("cost_usd")).as_py() or 0.0, 6),
            generated_tokens_this_run=done["tokens"], generate_s=round(elapsed, 1),
            tokens_per_s=round(done["tokens"] / elapsed, 1) if done["tokens"] else None,
        )
        failed_requests = sum(failed.values()) // per_call
        if attempts and failed_requests == len(attempts) and set(failed) <= {"connection", "timeout"}:
            raise UserError(f"teacher openai: cannot reach {', '.join(self.servers)}: every request failed "
                            f"({', '.join(sorted(failed))}) after {s.max_retries} retries; is the server running and "
                            f"base_url right?")
        if failed_requests > s.max_failed_share * len(attempts):
            kinds = ", ".join(f"{k}: {v // per_call}" for k, v in sorted(failed.items()))
            raise UserError(
                f"teacher openai: {failed_requests} of {len(attempts)} requests failed after {s.max_retries} "
                f"retries ({kinds}) at {', '.join(self.servers)}, more than max_failed_share = {s.max_failed_share}; "
                f"the answered ones are kept: run again to retry the rest"
            )


def has_failures(table: pa.Table) -> bool:
    """A shard with requests that failed after their retries: run_sharded sends them again."""
    return pc.any(pc.starts_with(table.column("finish_reason"), ERROR)).as_py() or False


class _ShardedRequests:
    """One generate call's requests, on an event loop of its own, fed to run_sharded shard by shard."""

    def __init__(self, teacher: OpenAITeacher, qrows: list[dict], shards: list[list[tuple[int, int]]],
                 per_call: int, api_key: str):
        self.teacher, self.qrows, self.shards, self.per_call, self.api_key = teacher, qrows, shards, per_call, api_key
        self.loop = asyncio.new_event_loop()
        self.caller: Caller | None = None
        self.work: dict[int, list[tuple[tuple[int, int], asyncio.Task | list[dict] | None]]] = {}
        self.order: list[int] = []  # shards to run, in order; position[i] = index of shard i in it
        self.position: dict[int, int] = {}
        self.done = {"tokens": 0, "started": time.perf_counter()}
        self.advance = lambda n=1, info=None: None  # the progress task's, set once it is open

    async def _open_caller(self) -> Caller:  # in the loop: the client's connections and limiters belong to it
        s = self.teacher.settings
        return Caller(base_urls=self.teacher.servers, api_key=self.api_key, endpoint=s.endpoint,
                      timeout_s=s.timeout_s, concurrency=s.concurrency, max_retries=s.max_retries,
                      backoff_s=s.backoff_s, max_backoff_s=s.max_backoff_s, requests_per_minute=s.requests_per_minute,
                      tokens_per_minute=s.tokens_per_minute, cooldown_s=s.cooldown_s)

    def plan(self, todo: dict[int, pa.Table | None]) -> None:
        """run_sharded's plan: a redone shard keeps its answered rows; only failed requests go out again."""
        for i, stale in todo.items():
            kept = {}
            if stale is not None:
                kept = {r["trace_id"]: r for r in stale.to_pylist() if not r["finish_reason"].startswith(ERROR)}
            self.work[i] = []
            for q, k in self.shards[i]:
                rows = [kept.get(trace_id(self.qrows[q]["question_id"], k + j)) for j in range(self.per_call)]
                self.work[i].append(((q, k), rows if all(rows) else None))
        self.position.update({i: len(self.order) + p for p, i in enumerate(todo)})
        self.order.extend(todo)
        if todo and self.caller is None:
            self.caller = self.loop.run_until_complete(self._open_caller())

    def _start(self, i: int) -> None:
        """Create the tasks of shard i (once). Shards are started a few ahead of the one being written, so the
        concurrency stays full across shard boundaries without holding a task per request of a
        million-request run in memory."""
        s = self.teacher.settings
        for j, (call, rows) in enumerate(self.work[i]):
            if rows is None:
                q, k = call
                question = self.qrows[q]
                request = self.teacher._request(question["question"], question["question_id"], k, self.per_call)
                estimate = len(question["question"]) // 4 + len(s.system_prompt or "") // 4
                self.work[i][j] = (call, self.loop.create_task(self.caller.call(request, estimate)))

    def run_shard(self, i: int) -> pa.Table:
        for ahead in self.order[self.position[i]:self.position[i] + 3]:
            self._start(ahead)
        pending = [task for _, task in self.work[i] if isinstance(task, asyncio.Task)]
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending))
        rows = []
        for (q, k), item in self.work.pop(i):
            if isinstance(item, asyncio.Task):
                rows += self.teacher._rows(self.qrows[q], k, self.per_call, item.result())
                self.done["tokens"] += item.result().completion_tokens
            else:
                rows += item
        elapsed = time.perf_counter() - self.done["started"]
        self.advance(0, info=f"{self.done['tokens'] / max(elapsed, 1e-9):.0f} tok/s")
        return pa.Table.from_pylist(rows, schema=API_TRACES)

    def close(self) -> None:
        """An error or interrupt leaves requests in flight: cancel them and close the connections."""
        leftover = asyncio.all_tasks(self.loop)
        for task in leftover:
            task.cancel()
        try:
            if leftover:
                self.loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
            if self.caller is not None:
                self.loop.run_until_complete(self.caller.close())
        finally:
            self.loop.close()
