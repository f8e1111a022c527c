"""s1K's domains: the top-level classes of the Mathematics Subject Classification 2020 (MSC2020).

s1 (arXiv 2501.19393 §2.2, "Diversity") classified each question into a domain with Claude 3.5 Sonnet "based on
the Mathematics Subject Classification (MSC) system" of the AMS (its footnote points at MSC2020), whose top level
also covers physics, biology and economics; s1K spans 50 of them. The 63 two-digit classes ship with the plugin
(``msc2020.tsv``), and the domain annotation is the prompted `topic` annotator with them as its labels.
"""

from __future__ import annotations

import functools
from pathlib import Path

MSC_FILE = Path(__file__).with_name("msc2020.tsv")


@functools.cache
def msc_classes() -> tuple[tuple[str, str], ...]:
    """(code, name) of each top-level MSC2020 class, in the published order."""
    rows = []
    for line in MSC_FILE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            code, name = line.split("\t")
            rows.append((code, name))
    return tuple(rows)


def msc_domains() -> list[str]:
    """The class names: the labels a question is classified into (and its `topic`)."""
    return [name for _, name in msc_classes()]


def msc_code(domain: str) -> str:
    """The two-digit code of a class name."""
    return dict((name, code) for code, name in msc_classes())[domain]


def msc_topic_annotator(**settings) -> dict:
    """The `topic` annotator's spec that classifies every question into an MSC2020 class, as s1 did (§2.2).

    keep_source false: s1 classified every question, whatever label its source had. The reply budget fits the
    longest class name (91, about 15 tokens) with room to spare. The model is the profile's annotator backend:
    s1 used Claude 3.5 Sonnet, e.g. through an OpenAI-compatible endpoint as ``backend``.
    """
    return {"name": "topic", "labels": msc_domains(), "keep_source": False, "max_tokens": 32, **settings}
