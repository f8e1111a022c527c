"""The components that run no model and follow no paper: the `length` and `verify` annotators, which measure
any trace, and `random` selection, the baseline every method must beat. A method's own rules, model-free or
not, live in its plugin."""

import nt_harness
from nt_modelfree.annotators import LengthAnnotator, VerifyAnnotator
from nt_modelfree.selectors import RandomSelector


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
