"""MATH-500 reasoning preset: data and scoring (shared with the other presets in nt_lmeval.reasoning)."""

from nt_lmeval import reasoning

keep_all = reasoning.keep_all
process_docs = reasoning.math_docs
process_results = reasoning.score_math


def load(local_data=None, **_metadata):
    return reasoning.load_docs("math500_reasoning", "HuggingFaceH4/MATH-500", "test", local_data=local_data)


def doc_to_text(doc: dict) -> str:
    return reasoning.math_prompt(doc["problem"])
