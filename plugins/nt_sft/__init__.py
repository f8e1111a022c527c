"""The `sft` trainer: supervised fine-tuning (full or LoRA) on Hugging Face Accelerate."""

import nt_harness
from nt_sft.trainer import SFTTrainer


@nt_harness.hookimpl
def register_trainers(register):
    register(SFTTrainer)
