"""Data loading and scoring for gym_heldout (lm-eval imports this file by path). Answers are read two ways
(filters `strict` and `flexible`) and graded exactly as the gym source grades teacher traces: nt_gym.answers."""

from __future__ import annotations

import json
from pathlib import Path

from nt_gym.answers import flexible_answer, score_answer, strict_answer


def load_heldout(data_files: dict, **_unused):
    """The task's JSONL, resolved against this folder. Built in memory: no datasets cache, no network."""
    import datasets

    here = Path(__file__).parent
    splits = {}
    for split, name in data_files.items():
        path = Path(name) if Path(name).is_absolute() else here / name
        with open(path) as f:
            splits[split] = datasets.Dataset.from_list([json.loads(line) for line in f if line.strip()])
    return datasets.DatasetDict(splits)


def strict(resps, docs):
    """lm-eval filter: each response's <answer> tag content (None: no answer); every repeat is kept."""
    return [[strict_answer(r) for r in rs] for rs in resps]


def flexible(resps, docs):
    """lm-eval filter: each response's last answer-shaped stretch for its family (None: no answer)."""
    return [[flexible_answer(doc["dataset"], r) for r in rs] for rs, doc in zip(resps, docs)]


def _answers(results: list) -> list:
    """A doc's extracted answers: the filters pass lm-eval's repeats as one list."""
    first = results[0]
    return list(first) if isinstance(first, (list, tuple)) else [first]


def process_results(doc: dict, results: list) -> dict:
    """Means over the doc's samples (one unless `repeats` is set): exact_match counts only a fully right
    answer; score keeps reasoning-gym's partial credit; no_answer counts samples with none."""
    entry = json.dumps({"dataset": doc["dataset"], "entry": json.loads(doc["entry"])})
    answers = _answers(results)
    values = [score_answer(entry, a) for a in answers]
    n = len(answers)
    return {"exact_match": sum(v >= 1.0 for v in values) / n, "score": sum(values) / n,
            "no_answer": sum(a is None for a in answers) / n}
