"""Model-free annotators (`length`, `verify`) and the `random` selector."""

import nt_harness
from nt_basic.annotators import LengthAnnotator, VerifyAnnotator
from nt_basic.selectors import RandomSelector


@nt_harness.hookimpl
def register_annotators(register):
    register(LengthAnnotator)
    register(VerifyAnnotator)


@nt_harness.hookimpl
def register_selectors(register):
    register(RandomSelector)


@nt_harness.hookimpl
def register_recipes(register):
    from nt_harness.recipes import Recipe

    register(Recipe("random", "random complete traces at the budget: the baseline every method must beat",
                    {"annotators": [{"name": "length"}], "selector": {"name": "random"}}))
