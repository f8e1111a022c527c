"""Uniform random choice: the control every selection method is compared with."""

from __future__ import annotations

import numpy as np

from nt_harness.components import Selector
from nt_harness.selection import fill_random, start


class RandomSelector(Selector):
    name = "random"
    description = "uniformly random complete traces, one per question"

    def select(self, pool, budget, seed, ctx):
        d, complete, question = start(pool)
        fill_random(d, question, complete, budget, np.random.default_rng(seed), "kept: random")
        return d.table()
