"""The `openthoughts-released` source: OpenThoughts-114k (default and ``metadata`` configs), OpenThoughts2-1M
and OpenThoughts3-1.2M, recognised row by row.

- ``conversations``: a list of ``{from, value}`` turns ("user"/"assistant" or "human"/"gpt"); the first user
  turn is the question, the next assistant turn the response. OpenThoughts-114k writes the response as
  ``<|begin_of_thought|>…<|end_of_thought|>`` then ``<|begin_of_solution|>…<|end_of_solution|>`` (under its
  ``system`` prompt); OpenThoughts2/3 write ``<think>…</think>`` then the answer. OpenThoughts2/3 rows add
  ``source``, ``domain`` and (OpenThoughts3) an LLM-rated ``difficulty``, kept as a column.
- the 114k ``metadata`` config: ``problem``, ``deepseek_reasoning``, ``deepseek_solution``,
  ``ground_truth_solution``, ``domain``, ``source``.
"""

from __future__ import annotations

from nt_released.importer import MalformedRow, ReleasedSource, between, text_field

USER, ASSISTANT = ("user", "human"), ("assistant", "gpt")
BEGIN_THOUGHT, END_THOUGHT = "<|begin_of_thought|>", "<|end_of_thought|>"
BEGIN_SOLUTION, END_SOLUTION = "<|begin_of_solution|>", "<|end_of_solution|>"


def split_response(text: str, where: str) -> tuple[str, str]:
    """(thinking, answer) of an OpenThoughts response, in either of its two markups."""
    if BEGIN_THOUGHT in text:
        if END_THOUGHT not in text:
            raise MalformedRow(f"{where}: response has {BEGIN_THOUGHT} but no {END_THOUGHT}")
        thinking = between(text, BEGIN_THOUGHT, END_THOUGHT, where)
        rest = text[text.find(END_THOUGHT) + len(END_THOUGHT):]
        answer = between(rest, BEGIN_SOLUTION, END_SOLUTION, where) if BEGIN_SOLUTION in rest else rest.strip()
        return thinking, answer
    if "</think>" in text:
        head, _, answer = text.partition("</think>")
        thinking = head.split("<think>", 1)[1] if "<think>" in head else head
        return thinking.strip(), answer.strip()
    raise MalformedRow(f"{where}: response has neither {BEGIN_THOUGHT}…{END_THOUGHT} nor <think>…</think>")


def conversation(row: dict, where: str) -> tuple[str, str]:
    turns = row.get("conversations")
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        raise MalformedRow(f"{where}: `conversations` must be a list of {{from, value}} turns")
    question = response = None
    for t in turns:
        role, value = str(t.get("from", "")).lower(), t.get("value")
        if role in USER and question is None:
            question = value
        elif role in ASSISTANT and question is not None:
            response = value
            break
    if not isinstance(question, str) or not question.strip():
        raise MalformedRow(f"{where}: `conversations` has no user turn with text")
    if not isinstance(response, str) or not response.strip():
        raise MalformedRow(f"{where}: `conversations` has no assistant turn after the user turn")
    return question, response


class OpenThoughtsReleasedSource(ReleasedSource):
    name = "openthoughts-released"
    dataset = "open-thoughts/OpenThoughts"
    description = "OpenThoughts-114k (+metadata), OpenThoughts2-1M, OpenThoughts3-1.2M traces from a local file"

    def parse_row(self, row, where):
        if "conversations" in row:
            question, response = conversation(row, where)
            thinking, answer = split_response(response, where)
            variant = ("OpenThoughts3" if "difficulty" in row else "OpenThoughts2" if "domain" in row or "source" in row
                       else "OpenThoughts-114k")
            reference = ""
        elif "deepseek_reasoning" in row:
            question = text_field(row, "problem", where)
            thinking = text_field(row, "deepseek_reasoning", where)
            answer = text_field(row, "deepseek_solution", where)
            reference = text_field(row, "ground_truth_solution", where, required=False)
            variant = "OpenThoughts-114k (metadata)"
        else:
            raise MalformedRow(f"{where}: neither `conversations` (OpenThoughts-114k/2/3) nor `problem` + "
                               f"`deepseek_reasoning` (the 114k metadata config); keys: {', '.join(sorted(row))}")
        if not thinking:
            raise MalformedRow(f"{where}: the response's thinking is empty")
        extra = {}
        if row.get("difficulty") is not None:
            try:
                extra["difficulty"] = float(row["difficulty"])
            except (TypeError, ValueError):
                raise MalformedRow(f"{where}: `difficulty` must be a number (got {row['difficulty']!r:.40})") from None
        return {"question": question, "reference": reference, "thinking": thinking, "answer": answer,
                "topic": str(row.get("domain") or ""), "source": str(row.get("source") or ""),
                # OpenThoughts3's teacher is QwQ-32B, the earlier releases' DeepSeek-R1 (arXiv 2506.04178)
                "teacher": {"OpenThoughts3": "QwQ-32B"}.get(variant, "DeepSeek-R1"),
                "metadata": {"variant": variant}, "extra": extra}
