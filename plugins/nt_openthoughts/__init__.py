"""OpenThoughts (Guha et al. 2025, arXiv 2506.04178): its data recipe as a selector on any pool, the
importer of its released sets (OpenThoughts-114k, OpenThoughts2-1M, OpenThoughts3-1.2M), and its recipes."""

import nt_harness
from nt_harness.recipes import Recipe
from nt_openthoughts.released import OpenThoughtsReleasedSource
from nt_openthoughts.selector import OpenThoughtsSelector

# The equal-pool recipe keeps the profile's teacher and its n (2 on the embedded default) so every method sees the
# same pool.
METHOD = {"annotators": [{"name": "length"}], "selector": {"name": "openthoughts"}}
# The method's own pool and dedup: 16 answers per question from the teacher (arXiv 2506.04178, answer sampling:
# 16x per question), so the recipe generates a pool of its own; near-duplicate questions by Indel similarity >= 0.75
# (rapidfuzz), the threshold secondary notes on the paper quote; the repo's open_thoughts/deduplicate.py compares
# the `question` column with fuzz.ratio >= 95 (0.95): set selector.near_duplicate = 0.95 for that.
PAPER_METHOD = {"teacher": {"n": 16}, "annotators": [{"name": "length"}],
                "selector": {"name": "openthoughts", "near_duplicate": 0.75}}
# OpenThinker3-7B on OpenThoughts3 (arXiv 2506.04178, training details): lr 8e-5, 5 epochs, batch 512, packing;
# cosine with warmup 0.1 as the OpenThoughts team's LLaMA-Factory runs at these settings (mlfoundations-dev/
# openthoughts2_math_100k model card: lr 8e-05, total_train_batch_size 512, cosine, warmup_ratio 0.1, 5 epochs).
# weight decay: not fixed by the paper: ours (0.0, the Hugging Face Trainer default those cards run under; they list
# none). max_length: not fixed by the paper: ours (16,384, the cutoff_len open-thoughts train/README.md gives for
# OpenThinker and OpenThinker2). 512 packed sequences per step = 4 per micro-batch x 128 accumulation on one process
# (sft derives it from global_batch).
OT3_TRAINER = {"name": "sft", "lr": 8e-5, "epochs": 5, "schedule": "cosine", "warmup_ratio": 0.1,
               "weight_decay": 0.0, "batch_size": 4, "global_batch": 512, "packing": True, "max_length": 16384}
# OpenThinker-7B on OpenThoughts-114k (model card open-thoughts/OpenThinker-7B, training hyperparameters: lr 1e-05,
# train_batch_size 1 per device, 32 devices, cosine, warmup 0.1, 3 epochs; open-thoughts train/README.md:
# cutoff_len 16384, and packing only from OpenThinker2 on). Global batch 96 = 32 devices x 1 x 3 accumulation (ours
# where the card's accumulation line could not be read). weight decay: not fixed by the paper: ours (0.0, the
# Trainer default the card runs under; it lists none).
OT114K_TRAINER = {"name": "sft", "lr": 1e-5, "epochs": 3, "schedule": "cosine", "warmup_ratio": 0.1,
                  "weight_decay": 0.0, "batch_size": 1, "global_batch": 96, "max_length": 16384}
RELEASED = {"source": {"name": "openthoughts-released"}, "teacher": {"name": "released"}, "selector": {"name": "as-is"}}


@nt_harness.hookimpl
def register_selectors(register):
    register(OpenThoughtsSelector)


@nt_harness.hookimpl
def register_sources(register):
    register(OpenThoughtsReleasedSource)


@nt_harness.hookimpl
def register_recipes(register):
    register(Recipe("openthoughts", "OpenThoughts: dedup, 13-gram decontamination against the run's benchmarks, top "
                                    "sources per domain, questions with the longest responses, all their answers "
                                    "(the profile's pool, equal for every method)", METHOD))
    register(Recipe("openthoughts:paper-method", "OpenThoughts' own selection: 16 answers per question from the "
                                                 "teacher (its own pool, unlike the equal-pool `openthoughts`), "
                                                 "near-duplicate questions dropped (Indel similarity >= 0.75), then "
                                                 "as `openthoughts`", PAPER_METHOD))
    register(Recipe("openthoughts:ot3", "OpenThoughts' method with the OpenThinker3 preset (lr 8e-5, 5 epochs, "
                                        "batch 512, packing, cosine, warmup 0.1)", {**METHOD, "trainer": OT3_TRAINER}))
    register(Recipe("openthoughts:114k", "OpenThoughts' method with the OpenThinker-7B preset (lr 1e-5, 3 epochs, "
                                         "batch 96, cosine, warmup 0.1, 16,384)",
                    {**METHOD, "trainer": OT114K_TRAINER}))
    register(Recipe("openthoughts:released", "OpenThoughts-114k released traces as-is, trained as OpenThinker-7B "
                                             "(--set source.path=openthoughts-114k.jsonl)",
                    {**RELEASED, "trainer": OT114K_TRAINER}))
    register(Recipe("openthoughts:released-ot3", "OpenThoughts3-1.2M released traces as-is, trained as OpenThinker3-7B "
                                                 "(--set source.path=openthoughts3.jsonl)",
                    {**RELEASED, "trainer": OT3_TRAINER}))
