"""Leaderboards a person wants to read and paste into an issue.

The summary has one row per (recipe, budget, student): each task's primary metric as ``value ± stderr``
with a 95 % bootstrap interval, the share of answers not found, the difference to the first recipe with
a paired test on the same questions, generated tokens, and what the row cost. The detail table follows
lm-eval's shape (``Metric | ↑ | Value | ± | Stderr``). Written as Markdown, JSON and CSV, plus plots,
and printed with rich. ``nt-harness leaderboard`` re-renders all of it from the JSON alone.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

from pytablewriter import MarkdownTableWriter
from rich.table import Table

from nt_harness import plots
from nt_harness.pipeline import RunResult
from nt_harness.stats import mean_ci, paired_test

BASE = "(base student)"
NO_ANSWER = "no_answer"


def _num(x, digits=4) -> str:
    return "N/A" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def primary_metric(rows: list[dict]) -> str:
    """exact_match when the task has it, else its first higher-is-better metric."""
    names = [r["metric"] for r in rows]
    if "exact_match" in names:
        return "exact_match"
    return next((r["metric"] for r in rows if r.get("higher_is_better", True) and r["metric"] != NO_ANSWER), names[0])


def tasks_of(runs: list[RunResult]) -> dict[str, str]:
    """task -> its primary metric, in first-seen order."""
    out: dict[str, list[dict]] = {}
    for run in runs:
        for r in run.results:
            out.setdefault(r["task"], []).append(r)
    return {task: primary_metric(rows) for task, rows in out.items()}


def summarize(runs: list[RunResult]) -> list[dict]:
    """The numbers behind the summary table and the plots, one dict per run."""
    tasks = tasks_of(runs)
    reference = {}
    for run in runs:
        if run.recipe != BASE:
            reference.setdefault(run.budget, run)  # first recipe at each budget
    out = []
    for run in runs:
        ref = reference.get(run.budget)
        row = {"recipe": run.recipe, "budget": run.budget, "student": run.student, "tasks": {},
               "cost": run.cost, "reference": ref.recipe if ref is not None and ref is not run else None}
        for task, metric in tasks.items():
            found = {r["metric"]: r for r in run.results if r["task"] == task}
            if metric not in found:
                continue
            values = run.per_question.get(task, {}).get(metric, {})
            cell = {"metric": metric, "value": found[metric]["value"], "stderr": found[metric].get("stderr"),
                    "n": found[metric].get("n"), "ci": mean_ci(list(values.values())),
                    "no_answer": found.get(NO_ANSWER, {}).get("value")}
            tokens = run.per_question.get(task, {}).get("response_tokens")
            cell["gen_tokens"] = sum(tokens.values()) / len(tokens) if tokens else None
            if row["reference"]:
                ref_values = ref.per_question.get(task, {}).get(metric, {})
                cell["paired"] = paired_test(ref_values, values) if values and ref_values else None
            row["tasks"][task] = cell
        scores = [c["value"] for c in row["tasks"].values()]
        row["average"] = sum(scores) / len(scores) if scores else None
        out.append(row)
    return out


def summary_table(summary: list[dict]) -> tuple[list[str], list[list[str]]]:
    tasks = list(dict.fromkeys(t for row in summary for t in row["tasks"]))
    headers = ["Recipe", "Budget", "Student"]
    for task in tasks:
        metric = next(row["tasks"][task]["metric"] for row in summary if task in row["tasks"])
        headers += [f"{task} {metric} ↑", "95% CI", "no answer ↓", "Δ vs first (p)"]
    if len(tasks) > 1:
        headers.append("Average ↑")
    headers += ["Gen tok", "Train tok", "Teacher tok", "Wall s"]
    if any("cost_usd" in row["cost"] for row in summary):
        headers.append("Teacher $")
    body = []
    for row in summary:
        line = [row["recipe"], str(row["budget"]), row["student"]]
        gen = []
        for task in tasks:
            c = row["tasks"].get(task)
            if c is None:
                line += ["", "", "", ""]
                continue
            paired = c.get("paired")
            line += [
                f"{_num(c['value'])} ± {_num(c['stderr'])}",
                f"[{_num(c['ci'][0], 3)}, {_num(c['ci'][1], 3)}]" if c["ci"] else "N/A",
                _num(c["no_answer"], 3),
                f"{paired['diff']:+.3f} (p={paired['p']:.2g})" if paired else ("ref" if row["recipe"] != BASE else ""),
            ]
            if c["gen_tokens"] is not None:
                gen.append(c["gen_tokens"])
        if len(tasks) > 1:
            line.append(_num(row["average"]))
        cost = row["cost"]
        line += [f"{sum(gen) / len(gen):.0f}" if gen else "N/A", f"{cost.get('train_tokens', 0):,}",
                 f"{cost.get('teacher_tokens', 0):,}", f"{cost.get('wall_s', 0):.0f}"]
        if "Teacher $" in headers:
            line.append(f"{cost.get('cost_usd', 0):.4f}")
        body.append(line)
    return headers, body


DETAIL_HEADERS = ["Recipe", "Budget", "Tasks", "Filter", "Metric", "", "Value", "", "Stderr", "n"]


def detail_rows(runs: list[RunResult]) -> list[list[str]]:
    out = []
    for run in runs:
        for r in sorted(run.results, key=lambda r: (r["task"], r["metric"])):
            out.append([run.recipe, str(run.budget), r["task"], r.get("filter", ""), r["metric"],
                        "↑" if r.get("higher_is_better", True) else "↓", _num(r["value"]), "±",
                        _num(r.get("stderr")), str(r.get("n", ""))])
    return out


def rich_table(runs: list[RunResult], title: str) -> Table:
    headers, body = summary_table(summarize(runs))
    table = Table(title=title, header_style="bold")
    for h in headers:
        table.add_column(h, justify="left" if h in ("Recipe", "Student") else "right", no_wrap=h == "Recipe")
    for line in body:
        table.add_row(*line)
    return table


def _markdown_table(headers, rows) -> str:
    return MarkdownTableWriter(headers=headers, value_matrix=rows, margin=1).dumps()


def markdown(runs: list[RunResult], meta: dict, figures: list[str]) -> str:
    headers, body = summary_table(summarize(runs))
    parts = [f"# {meta['title']}\n", *notes(meta), _markdown_table(headers, body)]
    parts += [f"![{Path(f).stem}]({Path(f).name})\n" for f in figures]
    parts += ["## Every metric (lm-eval's table shape)\n", _markdown_table(DETAIL_HEADERS, detail_rows(runs))]
    parts += ["## Provenance\n", _markdown_table(["Recipe", "Budget", "trace set", "checkpoint", "chat template"],
              [[r.recipe, str(r.budget), r.provenance.get("selection", "")[:12], r.provenance.get("checkpoint", "")[:12],
                r.provenance.get("chat_template_sha", "")[:12]] for r in runs])]
    if meta.get("versions"):
        parts.append("Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(meta["versions"].items())) + "\n")
    return "\n".join(parts)


def notes(meta: dict) -> list[str]:
    out = []
    if meta.get("profile"):
        out.append(f"Profile `{meta['profile']}`; budget: {meta.get('budget_mode', 'equal')}; seed "
                   f"{meta.get('seed', 0)}; command: `{meta.get('command', '')}`.\n")
    if meta.get("wall_s") is not None:
        out.append(f"Wall time of this invocation: {meta['wall_s']:.0f} s. `Wall s` is each row's own compute "
                   "time (its teacher, annotation, selection, training and evaluation stages), cached or not.\n")
    out.append("Value ± standard error (lm-eval's); 95% CI: percentile bootstrap over questions; Δ vs first: "
               "difference to the first recipe at the same budget on the same questions, with the p-value of "
               "an exact McNemar test (binary scores) or a paired permutation test; `no answer`: share of "
               "responses with no extractable answer (counted wrong); `Gen tok`: mean generated tokens.\n")
    return out


def write(runs: list[RunResult], folder: Path, title: str, meta: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"title": title, "created": time.strftime("%Y-%m-%d %H:%M:%S"), **meta}
    (folder / "leaderboard.json").write_text(json.dumps({**meta, "runs": [asdict(r) for r in runs]}, indent=2,
                                                        default=str))
    summary = summarize(runs)
    figures = plots.draw(summary, folder)
    (folder / "leaderboard.md").write_text(markdown(runs, meta, figures))
    headers, body = summary_table(summary)
    with open(folder / "leaderboard.csv", "w", newline="") as f:
        csv.writer(f).writerows([headers, *body])
    return folder


def load(folder: Path) -> tuple[list[RunResult], dict]:
    data = json.loads((Path(folder) / "leaderboard.json").read_text())
    runs = [RunResult(**r) for r in data.pop("runs")]
    return runs, data
