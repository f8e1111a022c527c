"""s1K (Muennighoff et al. 2025, arXiv 2501.19393): its selection as a method on any pool, the importer of
its released sets (s1K, s1K-1.1), and its recipes."""

import nt_harness
from nt_harness.recipes import Recipe
from nt_s1k.released import S1KReleasedSource
from nt_s1k.selector import S1KSelector

# s1 (arXiv 2501.19393) training setup (§4.1 and its training-details appendix): lr 1e-5, cosine decay to 0
# after 5 % linear warmup, 5 epochs, batch size 16 (here 4 x 4 accumulation), AdamW β1 0.9, β2 0.95,
# weight decay 1e-4, block size 32,768 (the sft trainer drops longer examples, never cuts them).
PAPER_TRAINER = {"name": "sft", "lr": 1e-5, "schedule": "cosine", "warmup_ratio": 0.05, "epochs": 5,
                 "weight_decay": 1e-4, "adam_beta2": 0.95, "max_length": 32768, "batch_size": 4, "grad_accum": 4}
NATIVE = 1000  # s1K: 1,000 questions (arXiv 2501.19393 §2)
# the weak solver is the student answering without thinking; add solver1/solver2 for s1K's two models
METHOD = {"annotators": [{"name": "length"}, {"name": "system1"}], "selector": {"name": "s1k"}}


@nt_harness.hookimpl
def register_selectors(register):
    register(S1KSelector)


@nt_harness.hookimpl
def register_sources(register):
    register(S1KReleasedSource)


@nt_harness.hookimpl
def register_recipes(register):
    register(Recipe("s1k", "s1K: quality, difficulty (the System-1 answer is wrong), diversity (uniform domain, "
                           "longer traces likelier)", METHOD, native_budget=NATIVE))
    register(Recipe("s1k:solvers", "s1K with two solvers: System-1 answer and one solver2 attempt with thinking",
                    {"annotators": [{"name": "length"}, {"name": "system1"}, {"name": "solver2", "attempts": 1}],
                     "selector": {"name": "s1k"}}, native_budget=NATIVE))
    register(Recipe("s1k:paper", "s1K's method with its training preset (lr 1e-5 cosine, 5 % warmup, 5 epochs, "
                                 "wd 1e-4, β2 0.95, 32,768 block)",
                    {**METHOD, "trainer": PAPER_TRAINER}, native_budget=NATIVE))
    register(Recipe("s1k:released", "simplescaling/s1K(-1.1) released traces as-is (--set source.path=s1k.jsonl)",
                    {"source": {"name": "s1k-released"}, "teacher": {"name": "released"},
                     "selector": {"name": "as-is"},
                     "trainer": {"name": "sft", "max_length": 32768}},  # s1's block size
                    native_budget=NATIVE))
