"""NaturalThoughts (Li et al. 2025, arXiv 2507.01921): which R1 traces to distil, as recipes."""

import nt_harness
from nt_harness.recipes import Recipe

DISAGREE = {
    "annotators": [{"name": "verify"}, {"name": "system1"}, {"name": "length"}],
    "selector": {"name": "disagree"},
}


@nt_harness.hookimpl
def register_recipes(register):
    # The paper's best selection at 10k-100k examples is "models disagree" (arXiv 2507.01921 §4.2):
    # questions where a System-1 answer (Llama-3.3-70B, no thinking) differs from R1's.
    register(Recipe("naturalthoughts", "NaturalThoughts' best: traces where a System-1 model disagrees", DISAGREE))
    register(Recipe("naturalthoughts:disagree", "models-disagree selection (same as `naturalthoughts`)", DISAGREE))
    register(Recipe("naturalthoughts:random", "NaturalThoughts' random-selection baseline",
                    {"annotators": [{"name": "length"}], "selector": {"name": "random"}}))
