"""Loading and scoring shared by the reasoning presets in tasks/*_reasoning/ (their utils.py files import
this module, so the six presets extract answers one way).

Protocol (NaturalThoughts, arXiv 2507.01921 §4 "Evaluation"): the answer is read only after the thinking
ends; a response whose thinking never closed (truncated) has no answer, counts as wrong, and is counted
in its own `no_answer` metric. Math answers are the last `\\boxed{}` checked with math-verify; multiple
choice answers are a letter. The tasks do this themselves, on the whole response, instead of through lm-eval's
`think_end_token` model argument: lm-eval 0.4.13 keeps a response with no end of thinking whole (so cut-off
thinking would be scored as an answer) and drops the thinking from the samples it stores (which the
generated-token counts and `no_answer` need).

Local data, one mechanism for every preset: lm-eval's task metadata key `local_data`, a mapping from
task name to a local file (.jsonl, .json, .csv or .parquet with the hub dataset's own columns):
  lm_eval ... --include_path tasks --metadata '{"local_data": {"math500_reasoning": "/data/math500.jsonl"}}'
  TaskManager(include_path=..., metadata={"local_data": {...}})
  nt-harness: the lmeval benchmark's `local_data` setting.
Without one, the preset downloads its hub dataset when (and only when) the task is evaluated.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from pathlib import Path

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def load_docs(task: str, hub_path: str, hub_split: str, hub_name: str | None = None,
              local_data: dict | None = None):
    """The task's rows as {"test": Dataset}: from `local_data[task]` if given, else from the hub.

    A preset's `custom_dataset` receives all of the task's lm-eval metadata and passes `local_data` on.
    """
    import datasets

    path = (local_data or {}).get(task)
    if path:
        return datasets.DatasetDict({"test": datasets.Dataset(read_table(Path(path).expanduser()))})
    if os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        raise FileNotFoundError(
            f"{task}: offline and no local file. Pass one through lm-eval metadata, e.g. "
            f"--metadata '{{\"local_data\": {{\"{task}\": \"/path/to/file.jsonl\"}}}}' "
            f"(nt-harness: lmeval setting local_data), or allow downloads of {hub_path} (lmeval setting download)."
        )
    return datasets.DatasetDict({"test": datasets.load_dataset(hub_path, hub_name, split=hub_split)})


def read_table(path: Path):
    """A local data file as an Arrow table, in memory: no datasets cache, no network."""
    import pyarrow as pa

    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path)
    if suffix == ".csv":
        import pyarrow.csv as pcsv

        return pcsv.read_csv(path)
    import json

    text = path.read_text()
    if text.lstrip().startswith("["):
        rows = json.loads(text)
    else:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return pa.Table.from_pylist(rows)


def answer_part(response: str) -> str | None:
    """The text after the thinking; None when thinking opened and never closed (cut off: no answer).

    A response with no thinking tags is all answer (a System-1 model, or a backend whose
    think_end_token already removed the thinking).
    """
    if THINK_CLOSE in response:
        return response.rsplit(THINK_CLOSE, 1)[1]
    if THINK_OPEN in response:
        return None
    return response


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}), nested braces balanced, or of "\\boxed 5";
    None if absent, empty or never closed."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    tail = text[start:]
    tail = tail[len("\\boxed"):] if tail.startswith("\\boxed") else tail[len("\\fbox"):]
    if tail.startswith(" "):
        return re.split(r"[$\n]", tail, maxsplit=1)[0].strip() or None
    if not tail.startswith("{"):
        return None
    depth = 0
    for i, ch in enumerate(tail):
        depth += (ch == "{") - (ch == "}")
        if depth == 0:
            return tail[1:i].strip() or None  # an empty box (the prompt's "\\boxed{}" echoed) is no answer
    return None


def gold_text(value) -> str:
    """A reference answer as text: AMC files store integers as floats (27.0 -> "27")."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def math_equal(gold: str, predicted: str) -> bool:
    """math-verify's equivalence (symbolic and numeric: \\frac{1}{2} == 0.5), gold first as it expects."""
    from math_verify import parse, verify

    try:
        return bool(verify(parse(f"${gold}$"), parse(f"${predicted}$")))
    except Exception:  # noqa: BLE001 - an unparsable answer is a wrong answer, not a crashed run
        return False


def responses(results: list) -> list[str]:
    """All sampled responses of one doc: the `keep_all` filter passes lm-eval's repeats as one list."""
    first = results[0]
    return list(first) if isinstance(first, (list, tuple)) else [first]


def keep_all(resps, docs):
    """lm-eval filter that keeps every repeat (its default, take_first, drops all but the first)."""
    return resps


def math_docs(dataset):
    """Hub and local files name things differently (AMC: `question`, float answers); one shape for all."""

    def normalise(doc: dict) -> dict:
        problem = doc.get("problem") or doc.get("question") or doc.get("Problem")
        answer = doc.get("answer") if doc.get("answer") is not None else doc.get("Answer")
        key = next((doc[k] for k in ("unique_id", "id", "ID") if doc.get(k) is not None), None)  # AMC's id 0 is one
        key = hashlib.sha256(problem.encode()).hexdigest()[:16] if key is None else key
        return {"question_id": str(key), "problem": problem, "reference": gold_text(answer)}

    return dataset.map(normalise, remove_columns=dataset.column_names)


def score_math(doc: dict, results: list) -> dict:
    """Mean over the doc's samples of: boxed answer after thinking is math-equal to the reference."""
    right = missing = 0
    samples = responses(results)
    for response in samples:
        after = answer_part(response)
        boxed = last_boxed(after) if after is not None else None
        if boxed is None:
            missing += 1
        elif math_equal(doc["reference"], boxed):
            right += 1
    return {"exact_match": right / len(samples), "no_answer": missing / len(samples)}


_EXPLICIT = r"(?:(?i:answer)\s*(?:is|:)\s*|\\boxed\{\s*(?:\\text\{)?)\(?\**([{L}])(?![A-Za-z0-9_])"


def last_letter(text: str, letters: str) -> str | None:
    """The chosen option letter: the last explicit one ("Answer: C", "answer is (C)", "\\boxed{C}"), else
    the last standalone letter (not part of a word). Explicit first, so a trailing article "A" or a
    pronoun "I" after "Answer: C" does not override the answer.
    """
    explicit = re.findall(_EXPLICIT.replace("{L}", letters), text)
    if explicit:
        return explicit[-1]
    standalone = re.findall(rf"(?<![A-Za-z0-9_])([{letters}])(?![A-Za-z0-9_])", text)
    return standalone[-1] if standalone else None


def score_letter(doc: dict, results: list) -> dict:
    """Mean over the doc's samples of: letter after thinking equals the doc's `answer` letter."""
    letters = "ABCDEFGHIJKLMNOP"[: len(doc["options"])]
    right = missing = 0
    samples = responses(results)
    for response in samples:
        after = answer_part(response)
        letter = last_letter(after, letters) if after is not None else None
        if letter is None:
            missing += 1
        elif letter == doc["answer"]:
            right += 1
    return {"exact_match": right / len(samples), "no_answer": missing / len(samples)}


def shuffled_options(question: str, correct: str, incorrect: list[str], seed: int) -> tuple[list[str], str]:
    """Options in a fixed pseudo-random order and the correct letter. The order depends only on the seed
    and the question text, so it is the same whatever subset or row order is evaluated."""
    options = [correct, *incorrect]
    digest = hashlib.sha256(f"{seed}\n{question}".encode()).digest()
    random.Random(digest).shuffle(options)
    return options, "ABCDEFGHIJ"[options.index(correct)]


MULTIPLE_CHOICE_PROMPT = (
    "Answer the following multiple choice question. The last line of your response should be of the "
    "following format: 'Answer: $LETTER' (without quotes) where LETTER is one of {letters}. Think step "
    "by step before answering.\n\n{question}\n\n{options}"
)  # OpenAI simple-evals' multiple-choice template, the usual one for reasoning models


def multiple_choice_prompt(question: str, options: list[str]) -> str:
    letters = "ABCDEFGHIJKLMNOP"[: len(options)]
    listed = "\n".join(f"{letter}) {str(option).strip()}" for letter, option in zip(letters, options))
    return MULTIPLE_CHOICE_PROMPT.format(letters=letters, question=question.strip(), options=listed)


# DeepSeek-R1's recommended math prompt (its model card), in the user turn; LIMO sends the same instruction as
# a system prompt and Evalchemy's AIME/AMC tasks word theirs differently, so scores here are not theirs exactly
MATH_PROMPT = "{problem}\nPlease reason step by step, and put your final answer within \\boxed{{}}."


def math_prompt(problem: str) -> str:
    return MATH_PROMPT.format(problem=problem.strip())
