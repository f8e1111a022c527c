"""s1K (Muennighoff et al. 2025, arXiv 2501.19393): its selection as a method on any pool, the importer of
its released sets (s1K, s1K-1.1), and its recipes."""

import nt_harness
from nt_harness.recipes import Recipe
from nt_s1k.msc import msc_topic_annotator
from nt_s1k.released import S1KReleasedSource
from nt_s1k.selector import S1KSelector

# s1's training run, from arXiv 2501.19393 Appendix D "Training details" (Appendix C in v1) and simplescaling/s1
# train/sft.sh, train/sft_multinode.sh, train/sft.py (trl SFTTrainer over HF TrainingArguments).
PAPER_TRAINER = {
    "name": "sft",
    "lr": 1e-5,  # App. D: "a learning rate of 1e-5"; sft.sh lr=1e-5
    # App. D: "warmed up linearly for 5% (16 steps) and then decayed to 0 ... following a cosine schedule";
    # sft.sh --warmup_ratio=0.05 --lr_scheduler_type cosine (HF "cosine": decays to 0)
    "schedule": "cosine",
    "warmup_ratio": 0.05,
    "epochs": 5,  # App. D: "we train for 5 epochs"; sft.sh epochs=5
    # App. D: "a batch size of 16 for a total of 315 gradient steps"; sft.sh micro_batch_size=1 per GPU and
    # gradient_accumulation_steps=1 on 16 GPUs ("batch_size will be 16 if 16 gpus"); grad_accum follows from the
    # processes run here
    "batch_size": 1,
    "global_batch": 16,
    "weight_decay": 1e-4,  # App. D: "weight decay of 1e-4"; sft.sh --weight_decay 1e-4
    "adam_beta2": 0.95,  # App. D: AdamW "β1 = 0.9, β2 = 0.95"; sft.sh --adam_beta1 0.9 --adam_beta2 0.95
    "max_grad_norm": 1.0,  # not set by sft.sh: HF TrainingArguments' default 1.0
    # sft.sh --block_size=32768, sft.py max_seq_length = block_size; App. D: "the sequence length is large enough
    # to avoid cutting off any samples" (trl would cut a longer one, the sft trainer drops it)
    "max_length": 32768,
    # sft.py sets no packing (trl SFTConfig's default: off), so one example per sequence; an unpacked run also
    # fits a profile whose pack_length is shorter than the block
    "packing": False,
    "pack_length": None,
    # s1's data (data/tokenization.py) has no system turn: Qwen's chat template then adds its default one, which
    # is what the student's template does here with no system prompt
    "system_prompt": None,
}
NATIVE = 1000  # s1K: 1,000 questions (arXiv 2501.19393 §2)
# the weak solver is the student answering without thinking; add solver1/solver2 for s1K's two models
METHOD = {"annotators": [{"name": "length"}, {"name": "system1"}], "selector": {"name": "s1k"}}

# s1K's selection as published (§2.2): difficulty from two solvers, one attempt each, a question dropped when
# either answers it correctly (s1 graded with Claude 3.5 Sonnet against the reference; here the source's verifier)
PAPER_SOLVERS = [
    # not fixed by the paper: ours, greedy (one attempt) within the models' 8,192-token generation limit
    {"name": "solver1", "model": "Qwen/Qwen2.5-7B-Instruct", "attempts": 1, "temperature": 0.0,
     "max_new_tokens": 8192},
    {"name": "solver2", "model": "Qwen/Qwen2.5-32B-Instruct", "attempts": 1, "temperature": 0.0,
     "max_new_tokens": 8192},
]
PAPER_ANNOTATORS = [
    # §2.2: trace length in tokens of the Qwen2.5 tokenizer
    {"name": "length", "count": "tokenizer", "tokenizer": "Qwen/Qwen2.5-32B-Instruct"},
    *PAPER_SOLVERS,
    msc_topic_annotator(),  # §2.2 "Diversity": a domain per question from MSC2020 (nt_s1k.msc)
]
PAPER_SELECTOR = {"name": "s1k", "solver_columns": ["solver1_passes", "solver2_passes"], "domain_column": "topic"}


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
                                 "global batch 16, wd 1e-4, β2 0.95, 32,768 block, unpacked)",
                    {**METHOD, "trainer": PAPER_TRAINER}, native_budget=NATIVE))
    register(Recipe("s1k:paper-solvers", "s1K as published: drop what Qwen2.5-7B- or 32B-Instruct answers (one try "
                                         "each), MSC2020 domains by an LLM, s1's training preset",
                    {"annotators": PAPER_ANNOTATORS, "selector": PAPER_SELECTOR, "trainer": PAPER_TRAINER},
                    native_budget=NATIVE))
    register(Recipe("s1k:released", "simplescaling/s1K(-1.1) released traces as-is, trained with s1's preset "
                                    "(--set source.path=s1k.jsonl)",
                    {"source": {"name": "s1k-released"}, "teacher": {"name": "released"},
                     "selector": {"name": "as-is"}, "trainer": PAPER_TRAINER},
                    native_budget=NATIVE))
