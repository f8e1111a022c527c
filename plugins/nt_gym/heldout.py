"""The one rule that keeps benchmark questions out of training pools.

reasoning-gym seeds item i of a dataset with (dataset seed + i). Held-out questions use item seeds from
RESERVED_SEED_START up; a training source with seed s may only use item seeds
[s * SEED_STRIDE, (s + 1) * SEED_STRIDE), all below RESERVED_SEED_START, so the two never share a
generator seed. Different seeds can still phrase the same question (small number ranges), so the source
also drops every question whose id is in HELDOUT_IDS, written by build_tasks next to the task data.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

RESERVED_SEED_START = 10**9
SEED_STRIDE = 100_000  # item seeds (hence at most this many candidate items per family) per source seed
MAX_SOURCE_SEED = RESERVED_SEED_START // SEED_STRIDE - 1
HELDOUT_IDS_FILE = Path(__file__).with_name("heldout_ids.txt")


def training_seeds(seed: int) -> range:
    """The item seeds a source seed may draw from; refuses the reserved (held-out) space."""
    if not 0 <= seed <= MAX_SOURCE_SEED:
        raise ValueError(
            f"gym seed {seed} is outside 0..{MAX_SOURCE_SEED}: item seeds from {RESERVED_SEED_START} up are "
            "reserved for held-out benchmark questions"
        )
    return range(seed * SEED_STRIDE, (seed + 1) * SEED_STRIDE)


@lru_cache(maxsize=1)
def heldout_ids() -> frozenset[str]:
    if not HELDOUT_IDS_FILE.exists():
        raise FileNotFoundError(f"{HELDOUT_IDS_FILE} is missing: run `python -m nt_gym.build_tasks`")
    return frozenset(line.strip() for line in HELDOUT_IDS_FILE.read_text().splitlines() if line.strip())
