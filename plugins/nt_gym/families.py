"""Which reasoning-gym families the gym source draws from, at which difficulty, and how questions are
generated from seeds — shared by the training source and the held-out task builder so both phrase a
question identically (the held-out filter compares question hashes)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import reasoning_gym
from reasoning_gym.factory import DATASETS

from nt_harness.records import question_id

ANSWER_INSTRUCTION = "\n\nGive your final answer inside <answer></answer> tags."

# Families whose "tiny" questions SmolLM2-135M-Instruct answers right in about a fifth to a half of its samples,
# over four gym categories, with short questions (benchmarks/embedded_pool.py; README: the embedded default).
DEFAULT_FAMILIES = (
    "basic_arithmetic",
    "syllogism",
    "circuit_logic",
    "aiw",
    "course_schedule",
    "number_sequence",
)

# Per family and level, the dataset-config overrides; "medium" is reasoning-gym's own default config; "tiny" is
# sized for a ~100M-parameter model (single digits, two or three items: benchmarks/embedded_pool.py).
# Families not listed here have no level knob: every level uses their defaults.
LEVELS: dict[str, dict[str, dict]] = {
    "circuit_logic": {
        "easy": dict(min_terms=2, max_terms=3, min_inputs=2, max_inputs=3),
        "hard": dict(min_terms=5, max_terms=7, min_inputs=3, max_inputs=6),
    },
    "aiw": {"easy": dict(max_entities=4), "hard": dict(max_entities=10)},
    "chain_sum": {
        "easy": dict(min_terms=2, max_terms=3, min_digits=1, max_digits=2),
        "hard": dict(min_terms=4, max_terms=8, min_digits=2, max_digits=5, allow_negation=True),
    },
    "lcm": {"easy": dict(max_value=20), "hard": dict(max_numbers=3, max_value=500)},
    "gcd": {"easy": dict(max_value=100), "hard": dict(max_numbers=3, max_value=10000)},
    "isomorphic_strings": {
        "easy": dict(max_string_length=5),
        "hard": dict(min_string_length=8, max_string_length=20),
    },
    "binary_alternation": {"easy": dict(min_n=4, max_n=10), "hard": dict(min_n=30, max_n=60)},
    "letter_counting": {"easy": dict(min_words=3, max_words=8), "hard": dict(min_words=15, max_words=30)},
    "largest_island": {
        "easy": dict(min_rows=3, max_rows=5, min_cols=3, max_cols=5, min_num_islands=1, max_num_islands=3,
                     max_island_size=5),
        "hard": dict(min_rows=10, max_rows=15, min_cols=10, max_cols=15, max_num_islands=8, max_island_size=20),
    },
    "mahjong_puzzle": {
        "easy": dict(min_num_rounds=3, max_num_rounds=10),
        "hard": dict(min_num_rounds=50, max_num_rounds=100),
    },
    "course_schedule": {
        "easy": dict(min_num_courses=3, max_num_courses=6),
        "hard": dict(min_num_courses=10, max_num_courses=20, max_num_prerequisites=3),
    },
    "number_sequence": {
        "easy": dict(max_complexity=1, max_terms=6),
        "hard": dict(min_terms=6, max_terms=10, max_complexity=3),
    },
}
DIFFICULTIES = ("tiny", "easy", "medium", "hard")
TINY = {
    "chain_sum": dict(min_terms=2, max_terms=2, min_digits=1, max_digits=1),
    "basic_arithmetic": dict(min_terms=2, max_terms=2, min_digits=1, max_digits=1, operators=("+",),
                             allow_parentheses=False, allow_negation=False),
    "lcm": dict(max_value=15),
    "gcd": dict(max_value=30),
    "aiw": dict(max_entities=3),
    "number_sequence": dict(max_complexity=1, min_terms=4, max_terms=5, min_value=0, max_value=20),
    "letter_counting": dict(min_words=1, max_words=3),
    "ransom_note": dict(max_note_length=3, max_magazine_length=8),
    "course_schedule": dict(min_num_courses=3, max_num_courses=4),
    "circuit_logic": dict(min_terms=2, max_terms=2, min_inputs=2, max_inputs=2),
    "mahjong_puzzle": dict(min_num_rounds=3, max_num_rounds=10),
    "maze": dict(min_dist=5, max_dist=6, min_grid_size=5, max_grid_size=6),
    "leg_counting": dict(min_animals=1, max_animals=2, max_instances=3),
}
for _family, _config in TINY.items():
    LEVELS.setdefault(_family, {})["tiny"] = _config

# What an answer of each family looks like, for the flexible reading of a response (nt_gym.answers): a regex
# whose last match is the answer, or the family's few possible answers (matched in any case, given back as
# written here). Families not listed have no shape.
INTEGER = r"-?\d+"
TRUE_FALSE = ("True", "False")
ANSWER_SHAPES: dict[str, str | tuple[str, ...]] = {
    **dict.fromkeys(("chain_sum", "lcm", "gcd", "basic_arithmetic", "count_bits", "leg_counting", "letter_counting",
                     "aiw", "number_sequence", "maze", "binary_alternation", "largest_island", "circuit_logic",
                     "self_reference"), INTEGER),
    **dict.fromkeys(("ransom_note", "course_schedule", "isomorphic_strings"), TRUE_FALSE),
    "syllogism": ("Yes", "No"),
    "mahjong_puzzle": ("Peng", "Chi", "Pass"),
    "family_relationships": ("mother", "father", "sister", "brother", "daughter", "son", "wife", "husband",
                             "grandmother", "grandfather", "aunt", "uncle", "niece", "nephew", "mother-in-law",
                             "father-in-law"),
    "color_cube_rotation": ("blue", "brown", "cyan", "gold", "gray", "green", "indigo", "magenta", "orange", "pink",
                            "purple", "red", "silver", "violet", "white", "yellow"),
}

# These generators iterate over Python sets, so their questions change with PYTHONHASHSEED: the same seed
# gives another pool in another process. tests/test_gym.py checks that the other families here do not.
NOT_REPRODUCIBLE = frozenset({"isomorphic_strings", "ransom_note"})


def category(family: str) -> str:
    """The gym category is the package a dataset lives in (reasoning_gym.<category>.<module>)."""
    if family not in DATASETS:
        raise ValueError(f"unknown reasoning-gym dataset {family!r}")
    return DATASETS[family][0].__module__.split(".")[1]


def level_config(family: str, difficulty: str) -> dict:
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {', '.join(DIFFICULTIES)}, not {difficulty!r}")
    return dict(LEVELS.get(family, {}).get(difficulty, {}))


def question_text(item: dict) -> str:
    return item["question"] + ANSWER_INSTRUCTION


def entry_json(family: str, item: dict) -> str:
    """What the verifier needs to rebuild score_answer's entry. default=str keeps a few families' dates
    serialisable; tests/test_gym.py checks the default families still score their own answers as 1."""
    return json.dumps({"dataset": family, "entry": item}, default=str, sort_keys=True)


def draw(family: str, difficulty: str, seeds: range, count: int, exclude: frozenset[str] | set[str],
         counts: dict) -> Iterator[tuple[str, str, dict]]:
    """Up to ``count`` distinct questions as (question_id, text, item), from items with generator seeds
    ``seeds`` in order (reasoning-gym seeds item i with dataset seed + i, so the range alone decides which
    questions can appear). Ids in ``exclude`` are skipped and counted in counts["dropped_heldout"];
    repeats (small number ranges repeat questions) in counts["dropped_duplicate"]."""
    dataset = reasoning_gym.create_dataset(
        family, size=len(seeds), seed=seeds.start, **level_config(family, difficulty)
    )
    seen: set[str] = set()
    give_up = 20 * count + 1000  # a family with fewer distinct questions than asked for is an error
    for i in range(min(len(seeds), give_up)):
        if len(seen) == count:
            return
        item = dataset[i]
        text = question_text(item)
        qid = question_id("gym", text)
        if qid in exclude:
            counts["dropped_heldout"] = counts.get("dropped_heldout", 0) + 1
        elif qid in seen:
            counts["dropped_duplicate"] = counts.get("dropped_duplicate", 0) + 1
        else:
            seen.add(qid)
            yield qid, text, item
    if len(seen) < count:
        raise ValueError(
            f"reasoning-gym {family!r} at difficulty {difficulty!r} gave only {len(seen)} distinct questions "
            f"of the {count} asked for; ask for fewer or raise the difficulty"
        )
