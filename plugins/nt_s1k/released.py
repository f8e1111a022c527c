"""The `s1k-released` source: simplescaling/s1K and s1K-1.1.

s1K rows: ``question``, ``solution`` (the reference solution), ``cot_type`` (math, science, crossword),
``source_type``, ``metadata``, ``thinking_trajectories`` (a list with Gemini's thinking) and ``attempt``
(Gemini's answer). s1K-1.1 rows carry ``deepseek_thinking_trajectory``/``deepseek_attempt`` (DeepSeek-R1,
the 1.1 release's point) beside ``gemini_thinking_trajectory``/``gemini_attempt``.
"""

from __future__ import annotations

from typing import Literal

from nt_released.importer import MalformedRow, ReleasedSource, text_field

FIELDS = {  # trajectory -> (thinking column, answer column, teacher)
    "gemini": ("thinking_trajectories", "attempt", "gemini-2.0-flash-thinking-exp"),  # s1K §2.1
    "deepseek": ("deepseek_thinking_trajectory", "deepseek_attempt", "DeepSeek-R1"),
    "gemini-1.1": ("gemini_thinking_trajectory", "gemini_attempt", "gemini-2.0-flash-thinking-exp"),
}


class S1KReleasedSource(ReleasedSource):
    name = "s1k-released"
    dataset = "simplescaling/s1K"
    description = "simplescaling/s1K or s1K-1.1 released traces from a local file"

    class Settings(ReleasedSource.Settings):
        # auto: DeepSeek-R1's trace where the row has one (s1K-1.1), else Gemini's (s1K)
        trajectory: Literal["auto", "gemini", "deepseek"] = "auto"

    def parse_row(self, row, where):
        question = text_field(row, "question", where)
        v11 = "deepseek_thinking_trajectory" in row or "gemini_thinking_trajectory" in row
        wanted = self.settings.trajectory
        if wanted == "auto":
            wanted = "deepseek" if v11 else "gemini"
        key = "gemini-1.1" if (wanted == "gemini" and v11) else wanted
        if key == "deepseek" and not v11:
            raise MalformedRow(f"{where}: trajectory 'deepseek' needs s1K-1.1 rows (deepseek_thinking_trajectory)")
        thinking_col, answer_col, teacher = FIELDS[key]
        return {
            "question": question,
            "reference": text_field(row, "solution", where, required=False),
            "topic": str(row.get("cot_type") or ""),
            "source": str(row.get("source_type") or ""),
            "thinking": text_field(row, thinking_col, where),
            "answer": text_field(row, answer_col, where),
            "teacher": teacher,
            "metadata": {"dataset": "simplescaling/s1K-1.1" if v11 else self.dataset, "trajectory": key},
        }
