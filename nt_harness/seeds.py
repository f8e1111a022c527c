"""Seeds that depend on what is asked, never on batching or on what ran before: the rule that makes a
resumed generation equal an uninterrupted one, shared by every teacher that seeds per request."""

from __future__ import annotations

import hashlib


def request_seed(seed: int, question_id: str, sample: int) -> int:
    """A per-request seed that depends on what is asked, not on batching, so a resumed run sends the
    same seeds as an uninterrupted one (31 bits: llama.cpp takes uint32, others int64)."""
    digest = hashlib.sha256(f"{seed}/{question_id}/{sample}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1
