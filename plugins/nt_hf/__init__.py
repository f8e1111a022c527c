"""Transformers-backed components: the `smollm2` and `tiny-llama` model aliases, the `hf` teacher and
the `system1` annotator."""

import nt_harness
from nt_hf.models import build_smollm2, build_tiny_llama
from nt_hf.system1 import System1Annotator
from nt_hf.teacher import HFTeacher


@nt_harness.hookimpl
def register_models(register):
    register("smollm2", build_smollm2)
    register("tiny-llama", build_tiny_llama)


@nt_harness.hookimpl
def register_teachers(register):
    register(HFTeacher)


@nt_harness.hookimpl
def register_annotators(register):
    register(System1Annotator)
