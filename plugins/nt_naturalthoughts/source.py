"""The `natural_reasoning` source: questions in the public NaturalReasoning schema (Yuan et al. 2025),
the question pool NaturalThoughts draws from (arXiv 2507.01921 §3.1).

Each row: ``question``, ``reference_answer`` (may be empty) and ``responses``, a list of
``{response_model, response}``. The Llama-3.3-70B-Instruct response is kept, in ``metadata``, as the
System-1 answer NaturalThoughts' models-disagree selection compares R1 against (§3.2).
"""

from __future__ import annotations

import json
import re

import pyarrow as pa
from pydantic import Field

from nt_harness import datafiles
from nt_harness.components import Settings, Source
from nt_harness.datafiles import MalformedRow
from nt_harness.recipes import SpecError
from nt_harness.records import QUESTIONS, question_id


def _model_key(name: str) -> str:
    """"Llama3.3-70B-Instruct" and "llama-3.3-70b-instruct" name the same model."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def parse_math(text: str):
    """Math-Verify's own extraction only: wrapping free text in $...$ would read words as products of
    symbols ("odd" = o*d*d), so a reference it cannot parse counts as not checkable."""
    from math_verify import parse

    return parse(text)


def math_equivalent(reference: str | None, answer: str | None) -> float | None:
    """1.0/0.0 when the reference parses as mathematics, else None. The answer is the last
    <answer>...</answer> when there is one (the project's answer convention), else the whole text."""
    from math_verify import verify

    gold = parse_math(reference.strip()) if reference and reference.strip() else []
    if not gold:
        return None
    tags = ANSWER_TAG.findall(answer or "")
    predicted = parse_math((tags[-1] if tags else answer or "").strip())
    return float(bool(predicted) and verify(gold, predicted))


def check_row(row, where: str) -> tuple[str, str, list[dict]]:
    """The row's question, reference answer and responses, or an error that names the row (MalformedRow: the
    CLI shows it as one line)."""
    if not isinstance(row, dict):
        raise MalformedRow(f"{where}: expected an object with question/reference_answer/responses, "
                           f"got {type(row).__name__}")
    if "question" not in row:
        raise MalformedRow(f"{where}: no `question` (a NaturalReasoning row has question, reference_answer, responses; "
                           f"this one has {', '.join(map(str, row)) or 'nothing'})")
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise MalformedRow(f"{where}: `question` must be a non-empty string (got {question!r:.60})")
    reference = row.get("reference_answer")
    if reference is None:
        reference = ""
    if not isinstance(reference, str):
        raise MalformedRow(f"{where}: `reference_answer` must be a string or null (got {type(reference).__name__})")
    responses = row.get("responses") or []
    if not isinstance(responses, list):
        raise MalformedRow(f"{where}: `responses` must be a list of {{response_model, response}}")
    for j, r in enumerate(responses):
        if not (isinstance(r, dict) and isinstance(r.get("response_model"), str) and isinstance(r.get("response"), str)):
            raise MalformedRow(f"{where}: responses[{j}] must have string `response_model` and `response`")
    return question, reference, responses


class NaturalReasoningSource(Source):
    name = "natural_reasoning"
    version = "1"
    description = "NaturalReasoning questions (local JSONL/Parquet or repo clone, or the hub dataset id)"

    class Settings(Settings):
        path: str  # a .jsonl/.parquet file, a local clone of the hub repo, or facebook/natural_reasoning
        split: str = "train"  # for a hub dataset
        limit: int | None = Field(None, ge=1)  # the first N distinct questions
        system1_model: str = "Llama3.3-70B-Instruct"  # whose response is the System-1 answer (§3.2)

    def score(self, questions: pa.Table, answers: list[str]) -> list[float | None]:
        """Math-Verify equivalence with the reference answer where both parse as mathematics; None where
        there is no checkable reference (free-text references need an LLM judge, as the paper used)."""
        references = questions.column("reference").to_pylist()
        if len(references) != len(answers):
            raise ValueError(f"{len(answers)} answers for {len(references)} questions")
        return [math_equivalent(ref, ans) for ref, ans in zip(references, answers)]

    def rows(self):
        return datafiles.rows(self.settings.path, self.name, self.settings.split)

    def load(self, ctx) -> pa.Table:
        wanted = _model_key(self.settings.system1_model)
        out, seen, duplicates, without_system1 = [], set(), 0, 0
        for where, row in self.rows():
            question, reference, responses = check_row(row, where)
            qid = question_id(self.name, question)
            if qid in seen:
                duplicates += 1
                continue
            seen.add(qid)
            system1 = next((r for r in responses if wanted in _model_key(r["response_model"])), None)
            without_system1 += system1 is None
            out.append({
                "question_id": qid, "source": self.name, "question": question, "reference": reference.strip(),
                "topic": "",  # NaturalReasoning has no domain label; a topic annotator assigns one
                "metadata": json.dumps({"system1_model": system1 and system1["response_model"],
                                        "system1_answer": system1 and system1["response"]}),
            })
            if self.settings.limit and len(out) >= self.settings.limit:
                break
        if not out:  # as the released sources refuse an empty file: a source of no questions is a mistake
            raise SpecError(f"source {self.name}: {self.settings.path} has no rows")
        ctx.stats.update(questions=len(out), dropped_duplicate=duplicates, without_system1_answer=without_system1)
        return pa.Table.from_pylist(out, schema=QUESTIONS)
