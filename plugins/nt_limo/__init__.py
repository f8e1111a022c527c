"""LIMO (Ye et al. 2025, arXiv 2502.03387) as a selector on any pool, its solver annotators, the importer
of its released set, and its recipes."""

import nt_harness
from nt_harness.recipes import Recipe
from nt_limo.released import LimoReleasedSource
from nt_limo.selector import LimoSelector
from nt_limo.solvers import Solver1Annotator, Solver2Annotator

# LIMO §4 (training): full-parameter SFT of Qwen2.5-32B-Instruct, lr 5e-6, cosine decay, no warmup, 15 epochs,
# sequence length 16,384; its prompt asks for the answer in \boxed{}.
LIMO_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
PAPER_TRAINER = {"name": "sft", "lr": 5e-6, "schedule": "cosine", "warmup_ratio": 0.0, "epochs": 15,
                 "max_length": 16384, "system_prompt": LIMO_SYSTEM_PROMPT}
NATIVE = 817  # LIMO's released set has 817 examples (arXiv 2502.03387 §3)
METHOD = {"annotators": [{"name": "verify"}, {"name": "length"}], "selector": {"name": "limo"}}


@nt_harness.hookimpl
def register_selectors(register):
    register(LimoSelector)


@nt_harness.hookimpl
def register_annotators(register):
    register(Solver1Annotator)
    register(Solver2Annotator)


@nt_harness.hookimpl
def register_sources(register):
    register(LimoReleasedSource)


@nt_harness.hookimpl
def register_recipes(register):
    register(Recipe(
        name="limo",
        description="LIMO: hard-but-solvable questions (teacher pass rate), best chain by length/verification/"
                    "exploration/connectives",
        spec=METHOD,
        native_budget=NATIVE,
    ))
    # The two-stage filter with small local solvers: LIMO used 4 and 32 attempts (§3.1); 2 and 4 keep the
    # embedded default in minutes (solver 2 keeps questions solved 1-3 times of its 4).
    register(Recipe(
        name="limo:solvers",
        description="LIMO with its two-stage solver filter (solver1: drop if solved in 2 tries; solver2: keep "
                    "1-3 of 4), then chain scoring",
        spec={"annotators": [{"name": "verify"}, {"name": "length"}, {"name": "solver1", "attempts": 2},
                             {"name": "solver2", "attempts": 4}],
              "selector": {"name": "limo"}},
        native_budget=NATIVE,
    ))
    register(Recipe(
        name="limo:paper",
        description="LIMO's method with its training preset (lr 5e-6 cosine, 15 epochs, 16,384 tokens, boxed prompt)",
        spec={**METHOD, "trainer": PAPER_TRAINER},
        native_budget=NATIVE,
    ))
    register(Recipe(
        name="limo:released",
        description="GAIR/LIMO's released 817 traces as-is (--set source.path=limo.jsonl)",
        spec={"source": {"name": "limo-released"}, "teacher": {"name": "released"},
              "selector": {"name": "as-is"},
              # the released chains run to thousands of tokens; the trainer drops what does not fit
              "trainer": {"name": "sft", "max_length": 16384}},
        native_budget=NATIVE,
    ))
