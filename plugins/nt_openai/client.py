"""One request to an OpenAI-compatible server, the way a long generation run needs it.

Concurrency is bounded, requests and tokens per minute are limited (aiolimiter), transient failures
are retried with exponential backoff and full jitter that honours ``Retry-After`` (tenacity), and a
request that still fails is returned as a reported failure instead of raised, so one bad request never
stops a run of millions. Configuration errors (bad key, unknown model or URL) are the same for every
request, so they do stop it.
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


class Caller:
    """Sends requests through one AsyncOpenAI client (its own retries off: tenacity owns them).

    Create it inside the event loop that will use it.
    """

    def __init__(self, *, base_url: str, api_key: str, endpoint: str, timeout_s: float, concurrency: int,
                 max_retries: int, backoff_s: float, max_backoff_s: float,
                 requests_per_minute: float | None, tokens_per_minute: float | None):
        self.client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout_s)
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

    async def _send(self, request: dict, prompt_estimate: int) -> Reply:
        if self.rpm is not None:
            await self.rpm.acquire()
        # tokens per minute: the prompt is charged before sending, the completion once it is known
        await self._charge_tokens(prompt_estimate)
        if self.endpoint == "chat":
            response = await self.client.chat.completions.create(**request)
            choices = [
                Choice(c.message.content or "",
                       getattr(c.message, "reasoning_content", None) or getattr(c.message, "reasoning", None),
                       c.finish_reason or "")
                for c in sorted(response.choices, key=lambda c: c.index)
            ]
        else:
            response = await self.client.completions.create(**request)
            choices = [Choice(c.text or "", None, c.finish_reason or "")
                       for c in sorted(response.choices, key=lambda c: c.index)]
        if not choices:
            raise EmptyReply()
        usage = response.usage
        reply = Reply(choices, usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0,
                      usage=usage)
        await self._charge_tokens(reply.completion_tokens)
        return reply

    async def call(self, request: dict, prompt_estimate: int = 0) -> Reply:
        """The reply, or a Reply with ``error`` set once every retry failed; raises only on a fatal status."""
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
            except openai.APIStatusError as exc:
                if exc.status_code in FATAL_STATUS:
                    raise
                return self._failed(exc, attempts)
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
        await self.client.close()
