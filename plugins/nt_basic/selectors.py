"""Uniform random choice, and NaturalThoughts' "models disagree" rule."""

from __future__ import annotations

import numpy as np

from nt_harness.components import Selector, Settings
from nt_harness.selection import column, fill_random, first_per_question, start


class RandomSelector(Selector):
    name = "random"
    description = "uniformly random complete traces, one per question"

    def select(self, pool, budget, seed, ctx):
        d, complete, question = start(pool)
        fill_random(d, question, complete, budget, np.random.default_rng(seed), "kept: random")
        return d.table()


class DisagreeSelector(Selector):
    name = "disagree"
    description = "traces whose verified answer the System-1 model gets wrong (NaturalThoughts' best)"
    requires = ("correct", "system1_correct")

    class Settings(Settings):
        fill: bool = True  # top up with random complete traces when too few disagree (recorded)
        require_correct: bool = True  # the teacher's own answer must verify

    def select(self, pool, budget, seed, ctx):
        rng = np.random.default_rng(seed)
        d, complete, question = start(pool)
        correct = column(pool, "correct") >= 1.0
        system1_right = column(pool, "system1_correct") >= 1.0
        if self.settings.require_correct:
            d.drop(complete & ~correct, "dropped: teacher answer wrong")
        ok = complete & (correct if self.settings.require_correct else True)
        d.drop(ok & system1_right, "dropped: models agree")
        disagree = np.flatnonzero(ok & ~system1_right)
        d.keep(first_per_question(question, rng.permutation(disagree)), "kept: models disagree", budget)
        if self.settings.fill and d.n_kept < budget:
            n = fill_random(d, question, complete, budget, rng, "kept: fill (random)")
            ctx.stats["filled"] = n
        return d.table()
