"""The `limo-released` source: GAIR/LIMO's 817 examples (``question``, ``solution``, ``answer``).

LIMO's ``solution`` is one chain of reasoning ending in the boxed answer, with no thinking tags; it is
split at its last "**Final Answer**" heading (the answer is that section), else before its last paragraph
when that paragraph holds the ``\\boxed{}`` answer, else it is all thinking and the answer is
``\\boxed{answer}``. A solution with ``</think>`` (later LIMO versions) is split at the tag.
"""

from __future__ import annotations

import re

from nt_harness.traces import split_trace
from nt_released.importer import MalformedRow, ReleasedSource, text_field

FINAL_ANSWER = re.compile(r"\*\*\s*final answer\s*:?\s*\*\*|^#+\s*final answer", re.IGNORECASE | re.MULTILINE)


def split_solution(solution: str, answer: str) -> tuple[str, str]:
    if "</think>" in solution:
        thinking, final, _ = split_trace(solution, "<think>", "</think>")
        return thinking, final
    heads = list(FINAL_ANSWER.finditer(solution))
    if heads:
        cut = heads[-1].start()
        return solution[:cut].strip(), solution[cut:].strip()
    paragraphs = solution.rstrip().rsplit("\n\n", 1)
    if len(paragraphs) == 2 and "\\boxed" in paragraphs[1]:
        return paragraphs[0].strip(), paragraphs[1].strip()
    return solution.strip(), f"\\boxed{{{answer}}}"


class LimoReleasedSource(ReleasedSource):
    name = "limo-released"
    dataset = "GAIR/LIMO"
    description = "GAIR/LIMO's released 817 traces (question, solution, answer) from a local file"

    def parse_row(self, row, where):
        question = text_field(row, "question", where)
        solution = text_field(row, "solution", where)
        answer = row.get("answer")
        if isinstance(answer, (int, float)) and not isinstance(answer, bool):
            answer = str(answer)
        if not isinstance(answer, str) or not answer.strip():
            raise MalformedRow(f"{where}: `answer` must be a non-empty string (got {answer!r:.60})")
        thinking, final = split_solution(solution, answer.strip())
        if not thinking:
            raise MalformedRow(f"{where}: `solution` has no reasoning before its final answer")
        return {"question": question, "reference": answer, "thinking": thinking, "answer": final, "topic": "math"}
