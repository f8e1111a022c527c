"""Leaderboards: one row per (recipe, budget, student, task, metric), in lm-eval's table shape
(``Value ± Stderr``, ↑/↓) plus what each row cost. Written as Markdown, JSON and CSV, printed with rich."""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

from pytablewriter import MarkdownTableWriter
from rich.table import Table

from nt_harness.pipeline import RunResult

HEADERS = ["Recipe", "Budget", "Student", "Task", "Metric", "", "Value", "±", "Stderr", "n",
           "Train tok", "Teacher tok", "Wall s"]


def _fmt(x, digits=4):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "N/A"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def rows(runs: list[RunResult]) -> list[list[str]]:
    out = []
    for run in runs:
        for r in sorted(run.results, key=lambda r: (r["task"], r["metric"])):
            out.append([
                run.recipe, str(run.budget), run.student, r["task"], r["metric"],
                "↑" if r.get("higher_is_better", True) else "↓",
                _fmt(r["value"]), "±", _fmt(r.get("stderr")), str(r.get("n", "")),
                f"{run.cost.get('train_tokens', 0):,}", f"{run.cost.get('teacher_tokens', 0):,}",
                f"{run.cost.get('wall_s', 0):.0f}",
            ])
    return out


def rich_table(runs: list[RunResult], title: str) -> Table:
    table = Table(title=title, header_style="bold")
    for h in HEADERS:
        table.add_column(h, justify="right" if h in {"Value", "Stderr", "n", "Train tok", "Teacher tok", "Wall s", "Budget"} else "left")
    last = None
    for row in rows(runs):
        if last is not None and row[0] != last:
            table.add_section()
        last = row[0]
        table.add_row(*row)
    return table


def markdown(runs: list[RunResult], title: str, notes: list[str]) -> str:
    writer = MarkdownTableWriter(headers=HEADERS, value_matrix=rows(runs), margin=1)
    writer.table_name = ""
    body = writer.dumps()
    return f"# {title}\n\n" + "".join(f"{n}\n\n" for n in notes) + body + "\n"


def write(runs: list[RunResult], folder: Path, title: str, meta: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"title": title, "created": time.strftime("%Y-%m-%d %H:%M:%S"), **meta}
    (folder / "leaderboard.json").write_text(
        json.dumps({**meta, "runs": [asdict(r) for r in runs]}, indent=2, default=str)
    )
    (folder / "leaderboard.md").write_text(markdown(runs, title, notes(meta)))
    with open(folder / "leaderboard.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([h or "better" for h in HEADERS])
        w.writerows(rows(runs))
    return folder


def notes(meta: dict) -> list[str]:
    out = []
    if meta.get("profile"):
        out.append(f"Profile `{meta['profile']}`; budget: {meta.get('budget_mode', 'equal')}; "
                   f"seed {meta.get('seed', 0)}; command: `{meta.get('command', '')}`.")
    if meta.get("wall_s") is not None:
        out.append(f"Wall time of this invocation: {meta['wall_s']:.0f} s (cached stages cost nothing; the "
                   "`Wall s` column is each row's own compute time, cached or not).")
    return out


def load(folder: Path) -> tuple[list[RunResult], dict]:
    data = json.loads((Path(folder) / "leaderboard.json").read_text())
    runs = [RunResult(**r) for r in data.pop("runs")]
    return runs, data
