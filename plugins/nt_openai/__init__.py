"""The `openai` teacher: any OpenAI-compatible server (DeepSeek's API, vLLM, SGLang, llama.cpp, hosted
providers), resumable and fault-tolerant."""

import nt_harness
from nt_openai.teacher import OpenAITeacher


@nt_harness.hookimpl
def register_teachers(register):
    register(OpenAITeacher)
