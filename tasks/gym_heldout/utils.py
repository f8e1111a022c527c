"""Data loading and scoring for gym_heldout (lm-eval imports this file by path). Answers are extracted
and graded exactly as the gym source grades teacher traces: nt_gym.answers."""

from __future__ import annotations

import json
from pathlib import Path

from nt_gym.answers import extract_answer, score


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


def process_results(doc: dict, results: list[str]) -> dict:
    """exact_match counts only a fully right answer; score keeps reasoning-gym's partial credit."""
    if extract_answer(results[0]) is None:
        return {"exact_match": 0.0, "score": 0.0, "no_answer": 1.0}
    value = score(json.dumps({"dataset": doc["dataset"], "entry": json.loads(doc["entry"])}), results[0])
    return {"exact_match": float(value >= 1.0), "score": value, "no_answer": 0.0}
