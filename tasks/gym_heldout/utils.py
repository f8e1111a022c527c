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


def keep_all(resps, docs):
    """lm-eval filter that keeps every repeat of a doc (with `repeats` > 1 the score averages them)."""
    return resps


def _responses(results: list) -> list[str]:
    """A doc's sampled responses: `keep_all` passes lm-eval's repeats as one list."""
    first = results[0]
    return list(first) if isinstance(first, (list, tuple)) else [first]


def process_results(doc: dict, results: list) -> dict:
    """Means over the doc's samples (one unless `repeats` is set): exact_match counts only a fully right
    answer; score keeps reasoning-gym's partial credit; no_answer counts samples with none."""
    entry = json.dumps({"dataset": doc["dataset"], "entry": json.loads(doc["entry"])})
    samples = _responses(results)
    exact = partial = missing = 0.0
    for response in samples:
        if extract_answer(response) is None:
            missing += 1
            continue
        value = score(entry, response)
        exact += float(value >= 1.0)
        partial += value
    n = len(samples)
    return {"exact_match": exact / n, "score": partial / n, "no_answer": missing / n}
