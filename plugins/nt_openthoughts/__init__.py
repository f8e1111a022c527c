"""OpenThoughts (Guha et al. 2025, arXiv 2506.04178): its data recipe as a selector on any pool, the
importer of its released sets (OpenThoughts-114k, OpenThoughts2-1M, OpenThoughts3-1.2M), and its recipes."""

import nt_harness
from nt_harness.recipes import Recipe
from nt_openthoughts.released import OpenThoughtsReleasedSource
from nt_openthoughts.selector import OpenThoughtsSelector

# The paper samples 16 answers per question from its teacher (QwQ-32B); a recipe keeps the profile's
# teacher and its n (2 on the embedded default) so every method sees the same pool.
METHOD = {"annotators": [{"name": "length"}], "selector": {"name": "openthoughts"}}
# OpenThoughts3 (arXiv 2506.04178, training details): lr 8e-5, 5 epochs, batch size 512, sequence packing.
# Batch 512 = 4 sequences x 128 accumulation steps on one process.
OT3_TRAINER = {"name": "sft", "lr": 8e-5, "epochs": 5, "batch_size": 4, "grad_accum": 128, "packing": True}
# OpenThoughts-114k / OpenThinker-7B (arXiv 2506.04178, training details of the 114k model): lr 1e-5, 3 epochs, cosine
# with 10 % warmup, 16,384 cutoff length.
OT114K_TRAINER = {"name": "sft", "lr": 1e-5, "epochs": 3, "schedule": "cosine", "warmup_ratio": 0.1,
                  "max_length": 16384}


@nt_harness.hookimpl
def register_selectors(register):
    register(OpenThoughtsSelector)


@nt_harness.hookimpl
def register_sources(register):
    register(OpenThoughtsReleasedSource)


@nt_harness.hookimpl
def register_recipes(register):
    register(Recipe("openthoughts", "OpenThoughts: dedup, 13-gram decontamination, top sources per domain, "
                                    "questions with the longest responses, all their answers", METHOD))
    register(Recipe("openthoughts:ot3", "OpenThoughts' method with the OpenThoughts3 preset (lr 8e-5, 5 epochs, "
                                        "batch 512, packing)", {**METHOD, "trainer": OT3_TRAINER}))
    register(Recipe("openthoughts:114k", "OpenThoughts' method with the OpenThoughts-114k preset (lr 1e-5, 3 epochs, "
                                         "cosine, warmup 0.1, 16,384)", {**METHOD, "trainer": OT114K_TRAINER}))
    register(Recipe("openthoughts:released", "OpenThoughts-114k/2/3 released traces as-is "
                                             "(--set source.path=openthoughts.jsonl)",
                    {"source": {"name": "openthoughts-released"}, "teacher": {"name": "released"},
                     "selector": {"name": "as-is"},
                     "trainer": {"name": "sft", "max_length": 16384}}))
