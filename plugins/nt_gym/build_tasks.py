"""Write the held-out benchmark data (tasks/gym_heldout/gym_heldout.jsonl) and the list of its question
ids that the gym source refuses (nt_gym/heldout_ids.txt), from the reserved seed space.

    python -m nt_gym.build_tasks [--per-family 36] [--difficulty tiny]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nt_gym.families import DEFAULT_FAMILIES, DIFFICULTIES, category, draw
from nt_gym.heldout import HELDOUT_IDS_FILE, RESERVED_SEED_START

TASK_DIR = Path(__file__).resolve().parents[2] / "tasks" / "gym_heldout"
DATA_FILE = "gym_heldout.jsonl"


def heldout_rows(families=DEFAULT_FAMILIES, per_family: int = 36, difficulty: str = "tiny") -> list[dict]:
    """One row per question; ``entry`` is a JSON string because entries differ in shape across families."""
    seeds = range(RESERVED_SEED_START, RESERVED_SEED_START + 10**6)
    rows = []
    for family in families:
        for qid, text, item in draw(family, difficulty, seeds, per_family, frozenset(), {}):
            rows.append({"question_id": qid, "dataset": family, "category": category(family), "question": text,
                         "answer": str(item["answer"]), "entry": json.dumps(item, default=str, sort_keys=True)})
    return rows


def write(rows: list[dict], task_dir: Path = TASK_DIR, ids_file: Path = HELDOUT_IDS_FILE) -> None:
    task_dir.mkdir(parents=True, exist_ok=True)
    with open(task_dir / DATA_FILE, "w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    ids_file.write_text("".join(f"{qid}\n" for qid in sorted(r["question_id"] for r in rows)))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-family", type=int, default=36)
    parser.add_argument("--difficulty", default="tiny", choices=DIFFICULTIES)
    args = parser.parse_args(argv)
    rows = heldout_rows(per_family=args.per_family, difficulty=args.difficulty)
    write(rows)
    print(f"wrote {len(rows)} held-out questions to {TASK_DIR / DATA_FILE} and their ids to {HELDOUT_IDS_FILE}")


if __name__ == "__main__":
    main()
