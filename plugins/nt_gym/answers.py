"""Final-answer extraction and scoring for gym questions, two ways, as lm-eval's gsm8k reads two ways:

strict    the content of the last ``<answer>`` tag after the thinking (its ``</answer>`` may be missing at
          the very end: generation stops at it and lm-eval cuts the stop string off). No tag, no answer.
flexible  the last stretch of the text that has the shape of the family's answers (an integer for integer
          families, True/False, Yes/No, one of a few words: ``families.ANSWER_SHAPES``), looked for in the tag's
          content, and where that holds none in everything after the thinking; for a family with no shape, the
          strict answer, else the last non-empty line. So ``<answer>The output of the circuit is 0.`` reads
          ``0``, as reasoning-gym's scorer wants it.

Both: thinking that opened and never closed was cut off, so there is no answer. The teacher's traces are
verified strictly (a training example must carry its answer in the tag); the held-out task reports both.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

from reasoning_gym.factory import get_score_answer_fn

from nt_gym.families import ANSWER_SHAPES

_OPEN, _CLOSE = "<answer>", "</answer>"


def after_thinking(text: str | None) -> str | None:
    """The text after ``</think>``; None when thinking opened and never closed (cut off)."""
    if not text:
        return None
    if "</think>" in text:
        return text.rsplit("</think>", 1)[1]
    return None if "<think>" in text else text


def strict_answer(text: str | None) -> str | None:
    """The last ``<answer>`` tag's content (closed, or running to the end of the text); None without one."""
    rest = after_thinking(text)
    if rest is None or _OPEN not in rest:
        return None
    content = rest.rsplit(_OPEN, 1)[1].split(_CLOSE, 1)[0].strip()
    return content or None


def flexible_answer(family: str, text: str | None) -> str | None:
    """The last match of the family's answer shape in the tag's content (else after the thinking)."""
    rest = after_thinking(text)
    if rest is None:
        return None
    strict = strict_answer(text)
    shape = ANSWER_SHAPES.get(family)
    if shape is None:
        if strict is not None:
            return strict
        lines = [line.strip() for line in rest.splitlines() if line.strip()]
        return lines[-1] if lines else None
    found = (strict is not None and _pattern(shape).findall(strict)) or _pattern(shape).findall(rest)
    if not found:
        return None
    return found[-1] if isinstance(shape, str) else {w.lower(): w for w in shape}[found[-1].lower()]


@lru_cache(maxsize=None)
def _pattern(shape: str | tuple[str, ...]) -> re.Pattern:
    if isinstance(shape, str):
        return re.compile(shape)
    words = sorted(shape, key=len, reverse=True)  # mother-in-law before mother
    return re.compile(r"(?<![\w-])(?:" + "|".join(map(re.escape, words)) + r")(?![\w-])", re.IGNORECASE)


@lru_cache(maxsize=None)
def _scorer(family: str):
    return get_score_answer_fn(family)


def score_answer(metadata: str, answer: str | None) -> float:
    """reasoning-gym's own score_answer on an extracted answer, clipped to [0, 1]; 0 without an answer."""
    if answer is None:
        return 0.0
    meta = json.loads(metadata)
    try:
        value = float(_scorer(meta["dataset"])(answer, meta["entry"]))
    except Exception:  # noqa: BLE001 - a malformed answer can break a family's parser; it is simply wrong
        return 0.0
    return min(1.0, max(0.0, value))


def score(metadata: str, text: str | None) -> float:
    """A response scored on its strict answer (how the pool's traces are verified)."""
    return score_answer(metadata, strict_answer(text))
