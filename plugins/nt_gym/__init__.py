"""The `gym` source: procedurally generated reasoning-gym questions with their own verifiers, kept
disjoint from the held-out benchmark in tasks/gym_heldout (see nt_gym.heldout)."""

from __future__ import annotations

import json
from typing import Literal

import pyarrow as pa
from pydantic import field_validator

import nt_harness
from nt_harness.components import Settings, Source, log
from nt_harness.records import QUESTIONS
from nt_gym import answers
from nt_gym.families import DEFAULT_FAMILIES, NOT_REPRODUCIBLE, category, draw, entry_json
from nt_gym.heldout import SEED_STRIDE, heldout_ids, training_seeds


class GymSource(Source):
    name = "gym"
    version = "1"
    description = "reasoning-gym questions over several families, verified by each family's score_answer"

    class Settings(Settings):
        families: list[str] = list(DEFAULT_FAMILIES)
        per_family: int = 8
        difficulty: Literal["tiny", "easy", "medium", "hard"] = "tiny"
        seed: int = 0

        @field_validator("families")
        @classmethod
        def _known(cls, families):
            if not families:
                raise ValueError("name at least one reasoning-gym family")
            for family in families:
                category(family)
            if len(set(families)) != len(families):
                raise ValueError("a family is listed twice")
            for family in NOT_REPRODUCIBLE.intersection(families):
                log.warning("gym family %r is not reproducible across processes (it iterates over a set)", family)
            return families

        @field_validator("per_family")
        @classmethod
        def _positive(cls, n):
            if not 1 <= n <= SEED_STRIDE:
                raise ValueError(f"per_family must be within 1..{SEED_STRIDE}")
            return n

        @field_validator("seed")
        @classmethod
        def _not_reserved(cls, seed):
            training_seeds(seed)
            return seed

    def load(self, ctx) -> pa.Table:
        s = self.settings
        seeds, exclude, counts = training_seeds(s.seed), heldout_ids(), {}
        rows = []
        for family in ctx.progress.track(s.families, "gym questions"):
            topic = category(family)
            for qid, text, item in draw(family, s.difficulty, seeds, s.per_family, exclude, counts):
                rows.append({"question_id": qid, "source": "gym", "question": text, "reference": str(item["answer"]),
                             "topic": topic, "metadata": entry_json(family, item)})
        ctx.stats.update({"dropped_heldout": counts.get("dropped_heldout", 0),
                          "dropped_duplicate": counts.get("dropped_duplicate", 0)})
        return pa.Table.from_pylist(rows, schema=QUESTIONS)

    def score(self, questions: pa.Table, answers_: list[str]) -> list[float | None]:
        metadata = questions.column("metadata").to_pylist()
        if len(metadata) != len(answers_):
            raise ValueError(f"{len(answers_)} answers for {len(metadata)} questions")
        return [answers.score(meta, text) for meta, text in zip(metadata, answers_)]

    def final_answers(self, questions: pa.Table, responses: list[str]) -> list[str | None]:
        """The flexible reading: the last stretch shaped like the family's answers."""
        metadata = questions.column("metadata").to_pylist()
        return [answers.flexible_answer(json.loads(meta)["dataset"], text) for meta, text in zip(metadata, responses)]


@nt_harness.hookimpl
def register_sources(register):
    register(GymSource)
