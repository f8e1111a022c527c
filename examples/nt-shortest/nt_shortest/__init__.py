"""A third-party plugin, written exactly as any pip package would write one.

It registers a selector ``shortest`` (the shortest complete traces, one per question: a cheap
"System-1-leaning" baseline) and a recipe ``shortest`` that uses it.
"""

import numpy as np

import nt_harness
from nt_harness.components import Selector, Settings
from nt_harness.recipes import Recipe
from nt_harness.selection import Decisions, column, one_per_question


class ShortestSelector(Selector):
    name = "shortest"
    version = "1"
    description = "the shortest complete traces, one per question"
    requires = ("completion_tokens",)

    class Settings(Settings):
        correct_only: bool = False  # needs the `verify` annotator when True

    def select(self, pool, budget, seed, ctx):
        d = Decisions(pool)
        ok = column(pool, "complete")
        d.drop(~ok, "dropped: incomplete")
        if self.settings.correct_only:
            right = column(pool, "correct", fill=0.0) >= 1.0
            d.drop(ok & ~right, "dropped: wrong answer")
            ok &= right
        rows = np.flatnonzero(ok)
        order = rows[np.argsort(column(pool, "completion_tokens")[rows], kind="stable")]
        d.keep(one_per_question(pool, order), "kept: among the shortest", budget)
        return d.table()


@nt_harness.hookimpl
def register_selectors(register):
    register(ShortestSelector)


@nt_harness.hookimpl
def register_recipes(register):
    register(Recipe("shortest", "example plugin: the shortest complete traces", {"selector": {"name": "shortest"}}))
