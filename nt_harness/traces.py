"""Reading a teacher's text as a trace: the one rule every teacher (local model or API) shares."""

from __future__ import annotations


def split_trace(text: str, think_start: str, think_end: str) -> tuple[str, str, bool]:
    """(thinking, answer, whether think_end was written) from the assistant's full text.

    A missing opening tag is tolerated (templates that prefill it); text with no tags at all is all answer.
    """
    start = text.find(think_start)
    body = text[start + len(think_start):] if start >= 0 else text
    end = body.find(think_end)
    if end >= 0:
        return body[:end].strip(), body[end + len(think_end):].strip(), True
    if start >= 0:
        return body.strip(), "", False
    return "", text.strip(), False
