"""Final-answer extraction and scoring for gym questions.

tasks/gym_heldout/utils.py carries a copy of extract_answer (lm-eval imports that file by path and must
not depend on nt-harness); tests/test_gym.py checks the two agree.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

from reasoning_gym.factory import get_score_answer_fn

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def extract_answer(text: str | None) -> str | None:
    """The content of the last <answer>…</answer> after any thinking; None when there is no answer.

    Thinking that opened and never closed was cut off, so there is no answer. Without a closed tag, the
    text after a trailing unclosed <answer> counts, else the last non-empty line.
    """
    if not text:
        return None
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    elif "<think>" in text:
        return None
    tagged = _ANSWER.findall(text)
    if tagged:
        return tagged[-1].strip()
    if "<answer>" in text:
        tail = text.rsplit("<answer>", 1)[1].strip()
        if tail:
            return tail
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else None


@lru_cache(maxsize=None)
def _scorer(family: str):
    return get_score_answer_fn(family)


def score(metadata: str, text: str | None) -> float:
    """reasoning-gym's own score_answer on the extracted answer, clipped to [0, 1]; 0 without an answer."""
    meta = json.loads(metadata)
    answer = extract_answer(text)
    if answer is None:
        return 0.0
    try:
        value = float(_scorer(meta["dataset"])(answer, meta["entry"]))
    except Exception:  # noqa: BLE001 - a malformed answer can break a family's parser; it is simply wrong
        return 0.0
    return min(1.0, max(0.0, value))
