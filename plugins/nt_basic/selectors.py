"""Uniform random choice, and NaturalThoughts' "models disagree" rule."""

from __future__ import annotations

from typing import Literal

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
    description = "traces whose answer the System-1 model does not share (NaturalThoughts' best)"

    class Settings(Settings):
        fill: bool = True  # top up with random complete traces when too few disagree (recorded)
        # judge: the `judge` annotator found the two answers different (any question, as the paper judged with
        # Llama-3.1-8B-Instruct, §4.2); verifier: the System-1 answer is graded wrong (needs a verifier; ours)
        by: Literal["verifier", "judge"] = "judge"
        require_correct: bool = False  # ours, not the paper's: the teacher's own answer must verify too

    def __init__(self, settings=None, **kw):
        super().__init__(settings, **kw)
        s = self.settings
        self.requires = (("correct",) if s.require_correct else ()) + (
            ("system1_correct",) if s.by == "verifier" else ("models_agree",))

    def select(self, pool, budget, seed, ctx):
        rng = np.random.default_rng(seed)
        d, complete, question = start(pool)
        ok = complete
        if self.settings.require_correct:
            correct = column(pool, "correct") >= 1.0
            d.drop(complete & ~correct, "dropped: teacher answer wrong")
            ok = complete & correct
        if self.settings.by == "verifier":
            agree = column(pool, "system1_correct") >= 1.0
        else:
            verdict = column(pool, "models_agree")
            d.drop(ok & np.isnan(verdict), "dropped: not judged")
            ok = ok & ~np.isnan(verdict)
            agree = verdict >= 1.0
        d.drop(ok & agree, "dropped: models agree")
        disagree = np.flatnonzero(ok & ~agree)
        d.keep(first_per_question(question, rng.permutation(disagree)), "kept: models disagree", budget)
        if self.settings.fill and d.n_kept < budget:
            n = fill_random(d, question, complete, budget, rng, "kept: fill (random)")
            ctx.stats["filled"] = n
        return d.table()
