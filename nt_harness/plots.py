"""Leaderboard plots (matplotlib, no display): a bar chart per task with 95 % intervals; when a sweep ran
several budgets, accuracy against budget per recipe with a confidence band; when a task ran in several
inference modes, accuracy against mean generated tokens per recipe (the efficiency trade-off)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BASE = "(base student)"


def _interval(cell) -> tuple[float, float]:
    lo, hi = cell["ci"] if cell.get("ci") else (cell["value"], cell["value"])
    return cell["value"] - lo, hi - cell["value"]


def draw(summary: list[dict], folder: Path) -> list[str]:
    files = []
    tasks = list(dict.fromkeys(t for row in summary for t in row["tasks"]))
    budgets = sorted({row["budget"] for row in summary if row["recipe"] != BASE})
    for task in tasks:
        rows = [r for r in summary if task in r["tasks"]]
        metric = rows[0]["tasks"][task]["metric"]
        fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(rows)), 3.6))
        labels = [r["recipe"] if len(budgets) < 2 or r["recipe"] == BASE else f"{r['recipe']}\n@{r['budget']}"
                  for r in rows]
        values = [r["tasks"][task]["value"] for r in rows]
        errors = list(zip(*[_interval(r["tasks"][task]) for r in rows]))
        colors = ["#bbbbbb" if r["recipe"] == BASE else f"C{i % 10}" for i, r in enumerate(rows)]
        ax.bar(range(len(rows)), values, yerr=errors, capsize=4, color=colors)
        ax.set_xticks(range(len(rows)), labels, rotation=20 if len(rows) > 4 else 0, ha="right" if len(rows) > 4 else "center",
                      fontsize=8)
        ax.set_ylabel(metric)
        ax.set_title(f"{task}: {metric} (95% bootstrap CI)")
        ax.set_ylim(bottom=0)
        files.append(str(_save(fig, folder / f"bars_{task}.png")))
        if len(budgets) > 1:
            files.append(str(_sweep(summary, task, metric, folder)))
    moded = dict.fromkeys(c["base"] for row in summary for c in row["tasks"].values()
                          if c.get("mode", "think") != "think")
    for base in moded:
        files.append(str(_modes(summary, base, folder)))
    return files


def _modes(summary, base, folder: Path) -> Path:
    """One line per (recipe, budget) through its modes: x = mean generated tokens, y = the primary metric."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    metric = None
    for i, row in enumerate(summary):
        cells = sorted((c for c in row["tasks"].values() if c.get("base") == base and c.get("gen_tokens")),
                       key=lambda c: c["gen_tokens"])
        if not cells:
            continue
        metric = cells[0]["metric"]
        color = "#888888" if row["recipe"] == BASE else f"C{i % 10}"
        label = row["recipe"] if row["recipe"] == BASE else f"{row['recipe']} @{row['budget']}"
        x, y = [c["gen_tokens"] for c in cells], [c["value"] for c in cells]
        errors = list(zip(*[_interval(c) for c in cells]))
        ax.errorbar(x, y, yerr=errors, marker="o", capsize=3, color=color, label=label)
        for c in cells:
            ax.annotate(c["mode"], (c["gen_tokens"], c["value"]), textcoords="offset points", xytext=(4, 4),
                        fontsize=7, color=color)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.LogFormatter())  # 30, 300: plain numbers
    ax.xaxis.set_minor_formatter(matplotlib.ticker.LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.4)))
    ax.set_ylim(bottom=0)
    ax.set_xlabel("mean generated tokens per question")
    ax.set_ylabel(metric or "")
    ax.set_title(f"{base}: accuracy vs tokens by inference mode")
    ax.legend(fontsize=7)
    return _save(fig, folder / f"modes_{base}.png")


def _sweep(summary, task, metric, folder: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    recipes = list(dict.fromkeys(r["recipe"] for r in summary if r["recipe"] != BASE))
    for i, recipe in enumerate(recipes):
        rows = sorted((r for r in summary if r["recipe"] == recipe and task in r["tasks"]), key=lambda r: r["budget"])
        x = [r["budget"] for r in rows]
        y = [r["tasks"][task]["value"] for r in rows]
        lo = [v - _interval(r["tasks"][task])[0] for v, r in zip(y, rows)]
        hi = [v + _interval(r["tasks"][task])[1] for v, r in zip(y, rows)]
        ax.plot(x, y, marker="o", color=f"C{i % 10}", label=recipe)
        ax.fill_between(x, lo, hi, color=f"C{i % 10}", alpha=0.15)
    base = [r for r in summary if r["recipe"] == BASE and task in r["tasks"]]
    if base:
        ax.axhline(base[0]["tasks"][task]["value"], color="#888888", linestyle="--", label="base student")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("budget (training examples)")
    ax.set_ylabel(metric)
    ax.set_title(f"{task}: data efficiency")
    ax.legend(fontsize=8)
    return _save(fig, folder / f"sweep_{task}.png")


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
