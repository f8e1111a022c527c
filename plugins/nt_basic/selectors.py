"""Uniform random choice, and NaturalThoughts' "models disagree" rule."""

from __future__ import annotations

import numpy as np

from nt_harness.components import Selector, Settings
from nt_harness.selection import Decisions, column, one_per_question


def complete_mask(pool, decisions: Decisions) -> np.ndarray:
    """Only complete responses are trainable (NaturalThoughts §3 keeps only complete R1 responses)."""
    complete = column(pool, "complete")
    decisions.drop(~complete, "dropped: incomplete")
    return complete


def fill_random(pool, decisions: Decisions, eligible: np.ndarray, budget: int, rng, reason: str) -> int:
    """Top up to the budget with random eligible traces of questions not chosen yet."""
    taken_q = set(pool.column("question_id").to_numpy(zero_copy_only=False)[decisions.kept])
    qids = pool.column("question_id").to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(eligible & ~np.isin(qids, list(taken_q)))
    return decisions.keep(one_per_question(pool, rng.permutation(rows)), reason, budget)


class RandomSelector(Selector):
    name = "random"
    description = "uniformly random complete traces, one per question"

    def select(self, pool, budget, seed, ctx):
        d = Decisions(pool)
        complete = complete_mask(pool, d)
        fill_random(pool, d, complete, budget, np.random.default_rng(seed), "kept: random")
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
        d = Decisions(pool)
        complete = complete_mask(pool, d)
        correct = column(pool, "correct") >= 1.0
        system1_right = column(pool, "system1_correct") >= 1.0
        if self.settings.require_correct:
            d.drop(complete & ~correct, "dropped: teacher answer wrong")
        ok = complete & (correct if self.settings.require_correct else True)
        d.drop(ok & system1_right, "dropped: models agree")
        disagree = np.flatnonzero(ok & ~system1_right)
        d.keep(one_per_question(pool, rng.permutation(disagree)), "kept: models disagree", budget)
        if self.settings.fill and d.n_kept < budget:
            n = fill_random(pool, d, complete, budget, rng, "kept: fill (random)")
            ctx.stats["filled"] = n
        return d.table()
