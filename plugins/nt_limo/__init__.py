"""LIMO (Ye et al. 2025, arXiv 2502.03387) as a selector on any pool, and its recipe."""

import nt_harness
from nt_harness.recipes import Recipe
from nt_limo.selector import LimoSelector


@nt_harness.hookimpl
def register_selectors(register):
    register(LimoSelector)


@nt_harness.hookimpl
def register_recipes(register):
    register(
        Recipe(
            name="limo",
            description="LIMO: hard-but-solvable questions, best chain by length/verification/exploration/connectives",
            spec={
                "annotators": [{"name": "verify"}, {"name": "length"}],
                "selector": {"name": "limo"},
            },
            native_budget=817,  # LIMO's released set has 817 examples (arXiv 2502.03387 §3)
        )
    )
