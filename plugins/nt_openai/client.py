"""One request to an OpenAI-compatible server, the way a long generation run needs it.

Concurrency is bounded, requests and tokens per minute are limited (aiolimiter), transient failures
are retried with exponential backoff and full jitter that honours ``Retry-After`` (tenacity), and a
request that still fails is returned as a reported failure instead of raised, so one bad request never
stops a run of millions. Configuration errors (bad key, unknown model or URL) are the same for every
request, so they do stop it.

Several servers (replicas of one model, e.g. a vLLM server per node) share the requests: each attempt goes
to a healthy server (``Servers``), so a retry after a server's failure lands on another one.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import openai
from aiolimiter import AsyncLimiter
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_random_exponential

log = logging.getLogger("nt_harness")

# The openai SDK honours Retry-After only up to 60 s and backs off on its own beyond that; so do we.
MAX_RETRY_AFTER_S = 60.0
FATAL_STATUS = (401, 403, 404)  # wrong key, no access, wrong model or URL: no request can succeed
SERVER_FAULTS = ("connection", "timeout", "server_error")  # what says the server, not the request, is unwell


@dataclass
class Choice:
    text: str  # the assistant's text (``content``, or ``text`` from the completions endpoint)
    reasoning: str | None  # a separate reasoning field (DeepSeek ``reasoning_content``, vLLM ``reasoning``)
    finish_reason: str


@dataclass
class Reply:
    choices: list[Choice] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0  # as billed: all choices together, per the server's own accounting
    attempts: int = 0
    error: str | None = None  # the failure's kind, when the request failed after its retries
    usage: Any = None  # the server's usage object, for what it reports beyond the counts (reasoning tokens)


def retryable(exc: BaseException) -> bool:
    """What the openai SDK itself retries: connection errors, timeouts, 408, 409, 429 and 5xx."""
    if isinstance(exc, openai.APIConnectionError):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return isinstance(exc, (openai.APIResponseValidationError, EmptyReply))


class EmptyReply(Exception):
    """A 200 response without choices (a proxy or server that lost the body)."""


def error_kind(exc: BaseException) -> str:
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection"
    if isinstance(exc, openai.RateLimitError):
        return "rate_limited"
    if isinstance(exc, openai.APIStatusError):
        return "server_error" if exc.status_code >= 500 else f"http_{exc.status_code}"
    if isinstance(exc, (openai.APIResponseValidationError, EmptyReply)):
        return "bad_response"
    return type(exc).__name__


def retry_after(exc: BaseException | None) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms`` (OpenAI), ``Retry-After`` seconds or date."""
    response = getattr(exc, "response", None)
    if response is None:
        return None
    headers = response.headers
    try:
        if "retry-after-ms" in headers:
            return float(headers["retry-after-ms"]) / 1000
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return float(value)
        except ValueError:
            return email.utils.parsedate_to_datetime(value).timestamp() - time.time()
    except (TypeError, ValueError):
        return None


class Refused(Exception):
    """A fatal status (FATAL_STATUS) from the server at ``url``: the run stops, naming it."""

    def __init__(self, url: str, status_code: int):
        super().__init__(f"{url} answered HTTP {status_code}")
        self.url, self.status_code = url, status_code


class Servers:
    """Which server an attempt goes to, and what each did this run.

    The healthy server with the fewest requests in flight (ties in turn), so replicas share the load and a
    slow one gets less. A connection error, timeout or 5xx sends a server to cool down for ``cooldown_s``:
    the retries of its requests go to the others. After that it takes one request at a time until one
    succeeds, so a server still down costs one attempt, not a burst. When every server is down the one back
    soonest is tried anyway: the caller's retry budget, not this, decides when a request gives up (and with
    one server this is the single-server behaviour).
    """

    def __init__(self, urls: list[str], cooldown_s: float, clock=time.monotonic):
        self.urls, self.cooldown_s, self.clock = list(urls), cooldown_s, clock
        n = len(self.urls)
        self.in_flight, self.until, self.suspect = [0] * n, [0.0] * n, [False] * n
        self.requests = [0] * n  # attempts sent to each
        self.failures: list[Counter[str]] = [Counter() for _ in range(n)]
        self.turn = 0

    def pick(self) -> int:
        """A server for the next attempt; counted in flight until ``release``."""
        now, n = self.clock(), len(self.urls)
        ready = [i for i in range(n) if self.until[i] <= now and not (self.suspect[i] and self.in_flight[i])]
        if ready:
            i = min(ready, key=lambda i: (self.in_flight[i], (i - self.turn) % n))
        else:
            i = min(range(n), key=lambda i: (self.until[i], self.in_flight[i]))
        self.turn = (i + 1) % n
        self.in_flight[i] += 1
        self.requests[i] += 1
        return i

    def failed(self, i: int, kind: str) -> None:
        self.failures[i][kind] += 1
        if kind in SERVER_FAULTS:
            self.until[i] = self.clock() + self.cooldown_s
            self.suspect[i] = True

    def release(self, i: int, ok: bool) -> None:
        self.in_flight[i] -= 1
        if ok:
            self.suspect[i] = False

    def stats(self) -> dict:
        return {url: {"requests": r, "failures": dict(f)}
                for url, r, f in zip(self.urls, self.requests, self.failures)}


class Caller:
    """Sends requests through an AsyncOpenAI client per server (their own retries off: tenacity owns them).
    ``concurrency`` and the rate limits are for all servers together; the key is the same for all.

    Create it inside the event loop that will use it.
    """

    def __init__(self, *, base_urls: list[str], api_key: str, endpoint: str, timeout_s: float, concurrency: int,
                 max_retries: int, backoff_s: float, max_backoff_s: float,
                 requests_per_minute: float | None, tokens_per_minute: float | None, cooldown_s: float = 10.0):
        self.clients = [openai.AsyncOpenAI(base_url=url, api_key=api_key, max_retries=0, timeout=timeout_s)
                        for url in base_urls]
        self.servers = Servers(base_urls, cooldown_s)
        self.endpoint = endpoint
        self.slots = asyncio.Semaphore(concurrency)
        self.rpm = AsyncLimiter(requests_per_minute, 60) if requests_per_minute else None
        self.tpm = AsyncLimiter(tokens_per_minute, 60) if tokens_per_minute else None
        self.max_retries = max_retries
        self.backoff = wait_random_exponential(multiplier=backoff_s, max=max_backoff_s)
        self.retries: Counter[str] = Counter()  # retries by the kind of failure that caused them

    def _wait(self, state: RetryCallState) -> float:
        asked = retry_after(state.outcome.exception()) if state.outcome else None
        asked = min(asked, MAX_RETRY_AFTER_S) if asked is not None else 0.0
        return max(asked, self.backoff(state))

    def _count_retry(self, state: RetryCallState) -> None:
        self.retries[error_kind(state.outcome.exception())] += 1

    async def _charge_tokens(self, tokens: int) -> None:
        if self.tpm is not None and tokens > 0:
            await self.tpm.acquire(min(tokens, self.tpm.max_rate))

    async def _ask(self, client: openai.AsyncOpenAI, request: dict) -> Reply:
        if self.endpoint == "chat":
            response = await client.chat.completions.create(**request)
            choices = [
                Choice(c.message.content or "",
                       getattr(c.message, "reasoning_content", None) or getattr(c.message, "reasoning", None),
                       c.finish_reason or "")
                for c in sorted(response.choices, key=lambda c: c.index)
            ]
        else:
            response = await client.completions.create(**request)
            choices = [Choice(c.text or "", None, c.finish_reason or "")
                       for c in sorted(response.choices, key=lambda c: c.index)]
        if not choices:
            raise EmptyReply()
        usage = response.usage
        return Reply(choices, usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0,
                     usage=usage)

    async def _send(self, request: dict, prompt_estimate: int) -> Reply:
        """One attempt, on the server ``Servers`` picks."""
        if self.rpm is not None:
            await self.rpm.acquire()
        # tokens per minute: the prompt is charged before sending, the completion once it is known
        await self._charge_tokens(prompt_estimate)
        i = self.servers.pick()
        ok = False
        try:
            reply = await self._ask(self.clients[i], request)
            ok = True
        except Exception as exc:
            self.servers.failed(i, error_kind(exc))
            if isinstance(exc, openai.APIStatusError) and exc.status_code in FATAL_STATUS:
                raise Refused(self.servers.urls[i], exc.status_code) from exc
            raise
        finally:
            self.servers.release(i, ok)
        await self._charge_tokens(reply.completion_tokens)
        return reply

    async def call(self, request: dict, prompt_estimate: int = 0) -> Reply:
        """The reply, or a Reply with ``error`` set once every retry failed; raises Refused on a fatal status."""
        attempts = 0
        async with self.slots:
            try:
                async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(self.max_retries + 1), wait=self._wait,
                    retry=retry_if_exception(retryable), before_sleep=self._count_retry, reraise=True,
                ):
                    with attempt:
                        attempts += 1
                        reply = await self._send(request, prompt_estimate)
            except (openai.APIError, EmptyReply) as exc:
                return self._failed(exc, attempts)
        reply.attempts = attempts
        return reply

    @staticmethod
    def _failed(exc: BaseException, attempts: int) -> Reply:
        kind = error_kind(exc)
        log.info("request failed after %d attempt(s): %s", attempts, kind)
        return Reply(attempts=attempts, error=kind)

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
