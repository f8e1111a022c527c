"""LIMO (Ye et al. 2025, arXiv 2502.03387) as a selector on any pool, its solver annotators, the importer
of its released set, and its recipes."""

import nt_harness
from nt_harness.recipes import Recipe
from nt_limo.released import LimoReleasedSource
from nt_limo.selector import LimoSelector
from nt_limo.solvers import Solver1Annotator, Solver2Annotator

# The system prompt LIMO trained and evaluated with (GAIR-NLP/LIMO README, Quick Start: "We use the following
# template and system prompt during training and inference").
LIMO_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."

# LIMO's training run (817 examples, LIMO v1), from its LLaMA-Factory config GAIR-NLP/LIMO
# train/examples/train_limo.yaml (full fine-tuning of Qwen2.5-32B-Instruct, ZeRO-3, template qwen, bf16), the
# HF TrainingArguments defaults it leaves alone, and the maintainers' answers in GAIR-NLP/LIMO issues #3, #9, #19.
PAPER_TRAINER = {
    "name": "sft",
    # arXiv 2502.03387 §4 gives the yaml's lr, schedule, no warmup, 15 epochs and 16,384 tokens; its v3 (the
    # 800-example LIMO-v2) a global batch of 64, issues #3/#19 32 for the 817-example run trained here
    "lr": 5e-6,  # train_limo.yaml learning_rate: 5.0e-6
    "schedule": "cosine",  # train_limo.yaml lr_scheduler_type: cosine (HF "cosine": decays to 0)
    "warmup_ratio": 0.0,  # train_limo.yaml warmup_ratio: 0.0
    "epochs": 15,  # train_limo.yaml num_train_epochs: 15 (issue #22)
    # train_limo.yaml per_device_train_batch_size 1, gradient_accumulation_steps 1, on 4 nodes x 8 GPUs: "the
    # effective global batch size is 32" (issues #3, #9, #19); grad_accum follows from the processes run here
    "batch_size": 1,
    "global_batch": 32,
    "weight_decay": 0.0,  # not in train_limo.yaml: HF TrainingArguments' default 0.0
    "adam_beta2": 0.999,  # not in train_limo.yaml: HF TrainingArguments' default betas (0.9, 0.999)
    "max_grad_norm": 1.0,  # not in train_limo.yaml: HF TrainingArguments' default 1.0
    # train_limo.yaml cutoff_len: 16384; LLaMA-Factory truncates longer examples, the sft trainer drops them
    "max_length": 16384,
    # train_limo.yaml sets no `packing`: LLaMA-Factory packs only in pre-training (DataArguments.packing), so
    # one example per sequence
    "packing": False,
    "pack_length": None,
    "system_prompt": LIMO_SYSTEM_PROMPT,
}
NATIVE = 817  # LIMO's released set has 817 examples (arXiv 2502.03387 v1 §3; GAIR/LIMO)
METHOD = {"annotators": [{"name": "verify"}, {"name": "length"}], "selector": {"name": "limo"}}

# LIMO's two-stage difficulty filter (arXiv 2502.03387 §3.1.1 in v3, §3.1 in v1) with its models and attempts.
PAPER_SOLVERS = [
    # stage 1: drop a problem Qwen2.5-Math-7B-Instruct solves within 4 attempts
    {"name": "solver1", "model": "Qwen/Qwen2.5-Math-7B-Instruct", "attempts": 4,
     # not fixed by the paper: ours, inside the model's 4,096-token context (the paper calls it short CoT)
     "max_new_tokens": 3072},
    # stage 2: keep problems DeepSeek-R1-Distill-Qwen-32B solves 1-3 times out of 32
    {"name": "solver2", "model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", "attempts": 32,
     # not fixed by the paper: the model card's recommended temperature 0.6 (top-p 0.95, the hf default) and its
     # maximum generation length 32,768
     "temperature": 0.6, "max_new_tokens": 32768},
]
# stage 1 drops what solver 1 solves at all (0 passes allowed); stage 2 keeps 1-3 passes (LIMO §3.1.1)
PAPER_SELECTOR = {"name": "limo", "solver1_max_passes": 0, "solver2_min_passes": 1, "solver2_max_passes": 3}


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
        description="LIMO's method with its training preset (lr 5e-6 cosine, 15 epochs, global batch 32, wd 0, "
                    "16,384 tokens, boxed prompt)",
        spec={**METHOD, "trainer": PAPER_TRAINER},
        native_budget=NATIVE,
    ))
    register(Recipe(
        name="limo:paper-solvers",
        description="LIMO as published: Qwen2.5-Math-7B-Instruct drops what it solves in 4 tries, "
                    "DeepSeek-R1-Distill-Qwen-32B keeps 1-3 of 32, chain scoring, LIMO's training preset",
        spec={"annotators": [{"name": "verify"}, {"name": "length"}, *PAPER_SOLVERS],
              "selector": PAPER_SELECTOR, "trainer": PAPER_TRAINER},
        native_budget=NATIVE,
    ))
    register(Recipe(
        name="limo:released",
        description="GAIR/LIMO's released 817 traces as-is, trained with LIMO's preset (--set source.path=limo.jsonl)",
        spec={"source": {"name": "limo-released"}, "teacher": {"name": "released"},
              "selector": {"name": "as-is"}, "trainer": PAPER_TRAINER},
        native_budget=NATIVE,
    ))
