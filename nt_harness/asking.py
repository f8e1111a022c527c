"""Asking a model through any teacher: how annotators that need a model (a judge, a labeller, a System-1
answerer) reuse the teachers' batching, concurrency, retries and resumable shards instead of their own."""

from __future__ import annotations

import dataclasses
from typing import Callable

import pyarrow as pa

from nt_harness.components import Context
from nt_harness.records import QUESTIONS


def ask(ctx: Context, backend: dict, ids: list[str], prompts: list[str | None], parse: Callable[[str], object],
        max_tokens: int, retries: int = 0, retry_temperature: float = 0.7,
        reply_prefix: str | None = None) -> tuple[list, dict]:
    """One reply per prompt from the teacher ``backend`` (a spec), parsed; None where a prompt is None.

    A reply ``parse`` returns None for is asked again, sampling with a fresh seed, at most ``retries``
    times, then left None and counted. Each attempt resumes from its own shards under ``ctx.scratch``.
    The settings teachers share by convention (n, max_new_tokens / max_tokens, temperature, seed, and
    ``reply_prefix`` as the ``prefill`` the reply starts with) are set where the teacher has them. Returns the values and stats (asked, invalid, the teacher's stats
    per attempt).
    """
    teacher = ctx.build("teacher", backend, "backend")
    fields = type(teacher.settings).model_fields
    values: list = [None] * len(ids)
    pending = [i for i, p in enumerate(prompts) if p is not None]
    asked, attempts = 0, []
    for attempt in range(retries + 1):
        if not pending:
            break
        update = {"n": 1, "max_new_tokens": max_tokens, "max_tokens": max_tokens}
        if reply_prefix is not None:
            update["prefill"] = reply_prefix
        if attempt:
            update["temperature"] = max(getattr(teacher.settings, "temperature", 0.0), retry_temperature)
            update["seed"] = (getattr(teacher.settings, "seed", 0) or 0) + attempt
        settings = teacher.settings.model_copy(update={k: v for k, v in update.items() if k in fields})
        n = len(pending)
        questions = pa.table({"question_id": [ids[i] for i in pending], "source": ["ask"] * n,
                              "question": [prompts[i] for i in pending], "reference": [""] * n,
                              "topic": [""] * n, "metadata": [""] * n}, schema=QUESTIONS)
        # the next attempt's set follows from this one's replies, so a resumed run asks the same
        sub = dataclasses.replace(ctx, scratch=ctx.scratch / f"attempt-{attempt}", stats={})
        replies = type(teacher)(settings).generate(questions, sub)
        asked += n
        attempts.append(sub.stats)
        text = {q: a or t for q, a, t in zip(replies.column("question_id").to_pylist(),
                                             replies.column("answer").to_pylist(),
                                             replies.column("thinking").to_pylist())}
        for i in pending:
            values[i] = parse(text.get(ids[i]) or "")
        pending = [i for i in pending if values[i] is None]
    stats = {"asked": asked, "units": sum(p is not None for p in prompts), "invalid": len(pending),
             "backend": backend.get("name"), "backend_attempts": attempts}
    return values, stats
