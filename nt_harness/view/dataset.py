"""`nt-harness export`: a row's selection, pool or answers as a Hugging Face dataset folder.

The folder is what the Hub's dataset repositories hold: Parquet under ``data/`` and a ``README.md`` whose
YAML header names the splits, so ``datasets.load_dataset(folder)`` reads it and ``huggingface-cli upload``
publishes it. The card says which recipe, settings and stage keys made the rows, so a training set
shared this way can be traced back to its run.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from nt_harness import UserError
from nt_harness.view.data import Run, Study

KINDS = {
    "selection": "the traces this row trained on, in the order its selector chose them",
    "pool": "every trace of the pool with this row's decision (kept, reason, rank) and the annotations",
    "eval": "the student's answer to every evaluated question, one split per task",
}


def pick_run(study: Study, recipe: str | None, budget: int | None) -> Run:
    """The row named by recipe (and budget); refused by name when none or several match."""
    rows = [r for r in study.runs if (recipe is None or r.result.recipe == recipe)
            and (budget is None or r.result.budget == budget)]
    if len(rows) != 1:
        names = ", ".join(f"{r.result.recipe} (budget {r.result.budget})" for r in study.runs)
        what = "no row" if not rows else "more than one row"
        raise UserError(f"{study.folder}: {what} matches --recipe {recipe} --budget {budget}; its rows: {names}")
    return rows[0]


def export(run: Run, what: str, out: Path) -> dict[str, int]:
    """Write the dataset folder (``what``: one of KINDS, which the CLI checks); returns rows per split."""
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty: export into a new folder")
    splits = _splits(run, what)
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "data").mkdir(parents=True)
    for name, table in splits.items():
        pq.write_table(table, tmp / "data" / f"{name}-00000-of-00001.parquet")
    (tmp / "README.md").write_text(card(run, what, splits))
    out.mkdir(parents=True, exist_ok=True)
    for path in tmp.iterdir():
        path.rename(out / path.name)
    tmp.rmdir()
    return {name: t.num_rows for name, t in splits.items()}


def _splits(run: Run, what: str) -> dict[str, pa.Table]:
    try:
        if what == "eval":
            return {_split_name(task): run.samples(task).drop_columns(["question_preview"])
                    for task in run.tasks()}
        if not run.has_selection:
            raise UserError(f"{run.label} selected nothing (the base student): export its eval instead")
        table = pa.Table.from_pylist(list(run.traces(limit=None)))
    except LookupError as e:
        raise UserError(str(e)) from e
    if what == "selection":
        table = table.filter(table.column("kept"))
        table = table.take(pc.sort_indices(table, sort_keys=[("rank", "ascending")]))
    return {"train": table}


def _split_name(task: str) -> str:
    """A split name the Hub accepts (word characters only): ``gym_heldout@no-think`` -> gym_heldout_no_think."""
    return re.sub(r"\W+", "_", task).strip("_")


def card(run: Run, what: str, splits: dict[str, pa.Table]) -> str:
    header = {"configs": [{"config_name": "default", "data_files": [
        {"split": name, "path": f"data/{name}-*.parquet"} for name in splits]}],
        "tags": ["nt-harness", "reasoning-distillation"]}
    r, meta = run.result, run.study.meta
    stages = "\n".join(f"| {p['stage']} | {p['component']} | {p['version']} | `{p['key']}` | "
                       f"`{json.dumps(p['settings'], sort_keys=True)}` |" for p in run.provenance())
    rows = ", ".join(f"{name}: {t.num_rows:,} rows" for name, t in splits.items())
    return (f"---\n{yaml.safe_dump(header, sort_keys=False)}---\n\n"
            f"# {r.recipe} · {what} ({r.student}, budget {r.budget})\n\n"
            f"{KINDS[what].capitalize()}, exported by `nt-harness export` from the study "
            f"\"{meta.get('title', '')}\" ({meta.get('created', '')}; command: `{meta.get('command', '')}`; "
            f"profile `{meta.get('profile', '')}`, seed {meta.get('seed', 0)}). {rows}.\n\n"
            "Every stage that made these rows, by its key in the nt-harness store (the same key is the same "
            "output):\n\n| Stage | Component | Version | Key | Settings |\n|---|---|---|---|---|\n"
            f"{stages}\n\nVersions: "
            + ", ".join(f"{k} {v}" for k, v in sorted(meta.get("versions", {}).items())) + "\n")
