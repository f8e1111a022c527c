"""Leaderboards a person wants to read and paste into an issue.

The summary has one row per (recipe, budget, student), with the examples it trained on beside the budget it
asked for: each task's primary metric as ``value ± stderr``
with a 95 % bootstrap interval, the share of answers not found, the difference to the first recipe with
a paired test on the same questions, mean generated tokens, and what the row cost (GPU-hours when a stage
ran on GPUs). The detail table follows lm-eval's shape (``Metric | ↑ | Value | ± | Stderr``). Written as
Markdown, JSON and CSV, plus plots, and printed with rich. ``nt-harness leaderboard`` re-renders all of it
from the JSON alone.

Inference modes: a task named ``<task>@<mode>`` (e.g. ``gym_heldout@no-think``) is ``<task>`` run in
another mode; the plain name is the task's own prompt ("think"). Each is its own column group; the
average is over the plain tasks, and a table and plot of accuracy against generated tokens per mode
show the efficiency trade-off (NaturalThoughts, arXiv 2507.01921, Table 4).

Every number comes from the typed contracts in ``nt_harness.records`` (``ResultRow``, ``Provenance``; the
cost from ``StageStats`` through ``Pipeline.cost``), never from a name only some plugin writes.
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

from nt_harness.pipeline import RunResult
from nt_harness.records import (HEADLINE_METRIC, NO_ANSWER, NO_FILTER, THINK, Provenance, ResultRow, completed,
                                metric_key, split_mode)

BASE = "(base student)"
NO_VALUE = "—"  # a cost this row does not have (e.g. GPU-hours of a CPU run)


def rows_of(run: RunResult) -> list[ResultRow]:
    return completed(run.results, run.per_question)


def _num(x, digits=4) -> str:
    return "N/A" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def primary_metric(rows: list[ResultRow]) -> tuple[str, str]:
    """(metric, filter): the one the task declares its headline, else HEADLINE_METRIC, else its first
    higher-is-better metric."""
    declared = next((r for r in rows if r.headline), None)
    if declared is None:
        declared = next((r for r in rows if r.metric == HEADLINE_METRIC), None)
    if declared is None:
        declared = next((r for r in rows if r.higher_is_better and r.metric != NO_ANSWER), rows[0])
    return declared.metric, declared.filter


def tasks_of(typed: list[list[ResultRow]]) -> dict[str, tuple[str, str]]:
    """task -> its primary (metric, filter), in first-seen order."""
    out: dict[str, list[ResultRow]] = {}
    for rows in typed:
        for r in rows:
            out.setdefault(r.task, []).append(r)
    return {task: primary_metric(rows) for task, rows in out.items()}


def headline_notes(runs: list[RunResult]) -> dict[str, str]:
    """task -> what its headline number is, in the task's own words (when it declares one)."""
    return {r.task: r.headline for run in runs for r in rows_of(run) if r.headline}


def summarize(runs: list[RunResult]) -> list[dict]:
    """The numbers behind the summary table and the plots, one dict per run."""
    from nt_harness.stats import mean_ci, paired_test  # scipy: loaded when a leaderboard is made

    typed = [rows_of(run) for run in runs]
    tasks = tasks_of(typed)
    reference = {}
    for run in runs:
        if run.recipe != BASE:
            reference.setdefault(run.budget, run)  # first recipe at each budget
    base = next((run for run in runs if run.recipe == BASE), None)
    out = []
    for run, rows in zip(runs, typed):
        ref = reference.get(run.budget)
        row = {"recipe": run.recipe, "budget": run.budget, "examples": run.examples, "student": run.student,
               "tasks": {}, "cost": run.cost, "reference": ref.recipe if ref is not None and ref is not run else None}
        for task, (metric, filter_) in tasks.items():
            found = {(r.metric, r.filter): r for r in rows if r.task == task}.get((metric, filter_))
            if found is None:
                continue
            key = metric_key(metric, filter_)
            values = run.per_question.get(task, {}).get(key, {})
            cell = {"metric": metric, "filter": filter_, "value": found.value, "stderr": found.stderr, "n": found.n,
                    "ci": mean_ci(list(values.values())), "no_answer": found.no_answer,
                    "gen_tokens": found.gen_tokens}
            cell["base"], cell["mode"] = split_mode(task)
            for name, other in (("paired", ref if row["reference"] else None),
                                ("vs_base", base if base is not None and run is not base else None)):
                other_values = other.per_question.get(task, {}).get(key, {}) if other is not None else {}
                cell[name] = paired_test(other_values, values) if values and other_values else None
            row["tasks"][task] = cell
        # the average is over each task's own mode; other modes are variants of the same questions
        plain = [c["value"] for c in row["tasks"].values() if c["mode"] == THINK]
        scores = plain or [c["value"] for c in row["tasks"].values()]
        row["average"] = sum(scores) / len(scores) if scores else None
        out.append(row)
    return out


def metric_label(cell: dict) -> str:
    """``exact_match``, or ``exact_match (flexible)`` under a named filter."""
    return cell["metric"] if cell.get("filter", NO_FILTER) == NO_FILTER else f"{cell['metric']} ({cell['filter']})"


def _paired(test: dict | None) -> str:
    return f"{test['diff']:+.3f} (p={test['p']:.2g})" if test else ""


def summary_table(summary: list[dict]) -> tuple[list[str], list[list[str]]]:
    tasks = list(dict.fromkeys(t for row in summary for t in row["tasks"]))
    headers = ["Recipe", "Budget", "Examples trained", "Student"]
    for task in tasks:
        label = next(metric_label(row["tasks"][task]) for row in summary if task in row["tasks"])
        headers += [f"{task} {label} ↑", "95% CI", "no answer ↓", "Δ vs base (p)", "Δ vs first (p)", "gen tok"]
    if len(tasks) > 1:
        headers.append("Average ↑")
    headers += ["Train tok", "Teacher tok", "Wall s"]
    gpu = any("gpu_hours" in row["cost"] for row in summary)
    if gpu:
        headers.append("GPU-h")
    if any("cost_usd" in row["cost"] for row in summary):
        headers.append("Teacher $")
    body = []
    for row in summary:
        line = [row["recipe"], str(row["budget"]), "" if row.get("examples") is None else str(row["examples"]),
                row["student"]]
        for task in tasks:
            c = row["tasks"].get(task)
            if c is None:
                line += ["", "", "", "", "", ""]
                continue
            line += [
                f"{_num(c['value'])} ± {_num(c['stderr'])}",
                f"[{_num(c['ci'][0], 3)}, {_num(c['ci'][1], 3)}]" if c["ci"] else "N/A",
                _num(c["no_answer"], 3),
                _paired(c.get("vs_base")) or ("ref" if row["recipe"] == BASE else ""),
                _paired(c.get("paired")) or ("ref" if row["recipe"] != BASE else ""),
                _tokens(c.get("gen_tokens")),
            ]
        if len(tasks) > 1:
            line.append(_num(row["average"]))
        cost = row["cost"]
        line += [f"{cost.get('train_tokens', 0):,}", f"{cost.get('teacher_tokens', 0):,}",
                 f"{cost.get('wall_s', 0):.0f}"]
        if gpu:
            line.append(f"{cost['gpu_hours']:.3f}" if "gpu_hours" in cost else NO_VALUE)
        if "Teacher $" in headers:
            line.append(f"{cost.get('cost_usd', 0):.4f}")
        body.append(line)
    return headers, body


def _share(x) -> str:
    """System-2 examples among those trained on (NaturalThoughts' difficulty mix is ~36 %, Table 4)."""
    return "" if x is None else f"{x:.0%}"


def _tokens(x) -> str:
    return "N/A" if x is None else f"{x:,.0f}"


MODE_HEADERS = ["Recipe", "Budget", "Task", "Mode", "Metric", "Value ± Stderr", "95% CI", "no answer ↓", "Gen tok"]


def mode_rows(summary: list[dict]) -> list[list[str]]:
    """Accuracy and mean generated tokens per inference mode, for each task run in more than one mode
    (System-2 accuracy against System-1 cost: NaturalThoughts, Table 4); empty when none was."""
    moded = {c["base"] for row in summary for c in row["tasks"].values() if c["mode"] != THINK}
    out = []
    for row in summary:
        cells = sorted(((c["base"], c["mode"], c) for c in row["tasks"].values() if c["base"] in moded),
                       key=lambda x: (x[0], x[1] != THINK, x[1]))
        for base, mode, c in cells:
            out.append([row["recipe"], str(row["budget"]), base, mode, metric_label(c),
                        f"{_num(c['value'])} ± {_num(c['stderr'])}",
                        f"[{_num(c['ci'][0], 3)}, {_num(c['ci'][1], 3)}]" if c["ci"] else "N/A",
                        _num(c["no_answer"], 3), _tokens(c.get("gen_tokens"))])
    return out


DETAIL_HEADERS = ["Recipe", "Budget", "Tasks", "Filter", "Metric", "", "Value", "", "Stderr", "n"]


def detail_rows(runs: list[RunResult]) -> list[list[str]]:
    out = []
    for run in runs:
        for r in sorted(rows_of(run), key=lambda r: (r.task, r.metric, r.filter)):
            out.append([run.recipe, str(run.budget), r.task, r.filter, r.metric, "↑" if r.higher_is_better else "↓",
                        _num(r.value), "±", _num(r.stderr), "" if r.n is None else str(r.n)])
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
    summary = summarize(runs)
    headers, body = summary_table(summary)
    parts = [f"# {meta['title']}\n", *notes(meta), _markdown_table(headers, body)]
    modes = mode_rows(summary)
    if modes:
        parts += ["## Inference modes\n",
                  "think: the task's own prompt; no-think: told to answer directly, the assistant turn prefilled "
                  "with an empty thinking block; adaptive: told to think only if the question needs it.\n",
                  _markdown_table(MODE_HEADERS, modes)]
    parts += [f"![{Path(f).stem}]({Path(f).name})\n" for f in figures]
    parts += ["## Every metric (lm-eval's table shape)\n", _markdown_table(DETAIL_HEADERS, detail_rows(runs))]
    parts += ["## Provenance\n", _markdown_table(
        ["Recipe", "Budget", "pool", "trace set", "System-2 share", "checkpoint", "chat template"],
        [[r.recipe, str(r.budget), r.provenance.get("pool_summary", ""), r.provenance.get("selection", "")[:12],
          _share(r.provenance.get("system2_share")), r.provenance.get("checkpoint", "")[:12],
          Provenance.model_validate(r.provenance).chat_template_sha[:12]] for r in runs])]
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
    out.append("Examples trained: what the row's student trained on (after any its trainer dropped), beside the "
               "budget it asked for.\n")
    out.append("Value ± standard error (lm-eval's); 95% CI: percentile bootstrap over questions; Δ vs base, Δ vs "
               "first: difference to the untrained student, and to the first recipe at the same budget, on the same "
               "questions, with the p-value of an exact McNemar test (binary scores) or a paired permutation test; "
               "`no answer`: share of responses with no extractable answer under the same reading (counted wrong); "
               "`gen tok`: mean generated tokens per question (over its samples); `GPU-h`: wall time x GPUs of the "
               "row's stages that ran on GPUs (— on CPU).\n")
    for task, note in meta.get("headlines", {}).items():
        out.append(f"Headline `{task}`: {note}.\n")
    return out


def write(runs: list[RunResult], folder: Path, title: str, meta: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"title": title, "created": time.strftime("%Y-%m-%d %H:%M:%S"), "headlines": headline_notes(runs), **meta}
    (folder / "leaderboard.json").write_text(json.dumps({**meta, "runs": [asdict(r) for r in runs]}, indent=2,
                                                        default=str))
    from nt_harness import plots  # matplotlib: loaded when a leaderboard is written

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
