"""The gym source: determinism, coverage, its verifier, and disjointness from the held-out benchmark."""

import json
import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from nt_gym import GymSource
from nt_gym.build_tasks import DATA_FILE, TASK_DIR, heldout_rows
from nt_gym.families import DEFAULT_FAMILIES, DIFFICULTIES, LEVELS, NOT_REPRODUCIBLE, category, draw
from nt_gym.heldout import MAX_SOURCE_SEED, RESERVED_SEED_START, heldout_ids, training_seeds
from nt_harness.records import QUESTIONS, question_id


def test_default_families_cover_six_families_in_four_categories():
    assert len(DEFAULT_FAMILIES) >= 6
    assert len({category(f) for f in DEFAULT_FAMILIES}) >= 4


def test_load_is_deterministic_and_seed_dependent(ctx):
    first = GymSource(per_family=3).load(ctx)
    again = GymSource(per_family=3).load(ctx)
    other = GymSource(per_family=3, seed=1).load(ctx)
    assert first.schema == QUESTIONS
    assert first.num_rows == 3 * len(DEFAULT_FAMILIES)
    assert first.equals(again)
    assert set(first.column("question_id").to_pylist()).isdisjoint(other.column("question_id").to_pylist())


def test_rows_follow_the_project_conventions(ctx):
    table = GymSource(per_family=2).load(ctx)
    for row in table.to_pylist():
        assert row["question"].endswith("Give your final answer inside <answer></answer> tags.")
        assert row["question_id"] == question_id("gym", row["question"])
        meta = json.loads(row["metadata"])
        assert row["topic"] == category(meta["dataset"])
        assert row["reference"] == str(meta["entry"]["answer"])


def test_questions_do_not_depend_on_the_process_hash_seed():
    families = sorted((set(LEVELS) | set(DEFAULT_FAMILIES)) - NOT_REPRODUCIBLE)
    script = (
        "import sys; from nt_gym.families import draw\n"
        f"for f in {families!r}:\n"
        "    for d in ('easy', 'hard'):\n"
        "        print(*[q for q, _, _ in draw(f, d, range(0, 10**5), 5, frozenset(), {})])\n"
    )
    runs = [subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONHASHSEED": seed},
                           capture_output=True, text=True, check=True).stdout for seed in ("1", "2")]
    assert runs[0] == runs[1] and runs[0].count("\n") == 2 * len(families)


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_every_level_config_is_valid(difficulty):
    for family in LEVELS:
        assert len(list(draw(family, difficulty, range(0, 1000), 2, frozenset(), {}))) == 2


def test_verifier_on_hand_made_answers(ctx):
    source = GymSource(per_family=1)
    table = source.load(ctx)
    refs = table.column("reference").to_pylist()
    for i, ref in enumerate(refs):
        three = table.take([i] * 3)
        right = [
            f"Working it out.\n<answer>{ref}</answer>",
            f"Working it out.\n<answer>{ref}",  # generation stopped at </answer>, which is cut off
            f"<think>\nMaybe <answer>wrong guess</answer>?\n</think>\nSo:\n<answer>{ref}</answer>",
        ]
        wrong = [
            "<answer>none</answer>",
            f"<think>\nthe answer is <answer>{ref}</answer> but I ran out of tokens",  # thinking cut off
            f"First I think.\n{ref}",  # strict: no tag, no answer
        ]
        assert source.score(three, right) == [1.0] * 3, (table.column("metadata")[i], right)
        assert source.score(three, wrong) == [0.0] * 3, (table.column("metadata")[i], wrong)


def test_reserved_seed_space_is_refused():
    with pytest.raises(ValidationError, match="reserved"):
        GymSource(seed=RESERVED_SEED_START)
    with pytest.raises(ValidationError, match="reserved"):
        GymSource(seed=MAX_SOURCE_SEED + 1)
    assert max(training_seeds(MAX_SOURCE_SEED)) < RESERVED_SEED_START


def test_pools_never_contain_heldout_questions(ctx):
    held = heldout_ids()
    for seed in range(4):
        ids = GymSource(per_family=20, seed=seed).load(ctx).column("question_id").to_pylist()
        assert held.isdisjoint(ids)
        assert len(ids) == len(set(ids))


def test_heldout_collisions_are_dropped_and_counted(ctx):
    # tiny additions are sums of two digits, so a large pool meets held-out questions by chance
    table = GymSource(families=["basic_arithmetic"], per_family=60).load(ctx)
    assert ctx.stats["dropped_heldout"] > 0
    assert table.num_rows == 60
    assert heldout_ids().isdisjoint(table.column("question_id").to_pylist())


def test_heldout_ids_match_the_committed_task_data():
    rows = [json.loads(line) for line in (TASK_DIR / DATA_FILE).read_text().splitlines()]
    assert {r["question_id"] for r in rows} == heldout_ids()
    assert rows == heldout_rows(), "tasks/gym_heldout is stale: run python -m nt_gym.build_tasks"
    for r in rows:
        assert r["question_id"] == question_id("gym", r["question"])


# Responses SmolLM2-135M-Instruct wrote (embedded teacher and trained students), with the family's reference.
REAL = [
    # a trained student looping to the token cap: right in words, not the bare value the verifier wants
    ("circuit_logic", "0", "<answer>\n\nThe output of the logic circuit is 0.\n\n<answer>\n\nThe output of the logic "
                           "circuit is 0.\n\n<answer>\n\nThe output of the", "The output of the", "0"),
    ("chain_sum", "15", "7 + 8 = 15", None, "15"),
    ("chain_sum", "15", "The final answer is 20.", None, "20"),
    ("course_schedule", "True", "<answer>\nTrue\n\nExample usage:\n\nassert canFinishAllCoaches([0, 2, 1",
     "True\n\nExample usage:\n\nassert canFinishAllCoaches([0, 2, 1", "True"),
    ("course_schedule", "False", "<answer>False.", "False.", "False"),
    ("aiw", "4", "Sarah has 2 male friends, and 3 female friends, so she has 2 + 3 = 6 female friends.", None, "6"),
    ("lcm", "24", "<think>\nmultiples of 6: 6, 12, 18, 24\n</think>\n<answer>The LCM is 24", "The LCM is 24", "24"),
    ("syllogism", "No", "<think>\nAll cats are dogs? No, so I would say yes", None, None),  # thinking cut off
    ("mahjong_puzzle", "Peng", "I think the result is peng.", None, "Peng"),
]


@pytest.mark.parametrize("family, ref, response, strict, flexible", REAL)
def test_strict_and_flexible_readings_of_real_responses(family, ref, response, strict, flexible):
    from nt_gym.answers import flexible_answer, score_answer, strict_answer

    assert strict_answer(response) == strict
    assert flexible_answer(family, response) == flexible
    entry = next(item for _, _, item in draw(family, "easy", range(0, 10**4), 200, frozenset(), {})
                 if str(item["answer"]) == ref)
    meta = json.dumps({"dataset": family, "entry": entry}, default=str)
    if flexible == ref:  # a right answer is scored right
        assert score_answer(meta, flexible) == 1.0
    if strict is not None and strict != ref:
        assert score_answer(meta, strict) < 1.0


def test_every_default_family_has_an_answer_shape_that_reads_its_own_references(ctx):
    from nt_gym.answers import flexible_answer

    for row in GymSource(per_family=3).load(ctx).to_pylist():
        family = json.loads(row["metadata"])["dataset"]
        assert flexible_answer(family, f"So the answer is {row['reference']}.") == row["reference"], family


def test_the_source_reads_a_free_responses_final_answer_the_flexible_way(ctx):
    source = GymSource(families=["basic_arithmetic", "syllogism"], per_family=1)
    table = source.load(ctx)
    assert source.final_answers(table, ["3 + 4 = 7, so the answer is 7.", "No. Wait, yes: yes"]) == ["7", "Yes"]
    assert source.final_answers(table, ["I cannot say.", "<think>\ncut off"]) == [None, None]
