"""Leaderboard numbers and files from hand-made runs: intervals, paired tests, plots, re-rendering."""

import json

import pytest

from nt_harness import leaderboard
from nt_harness.pipeline import RunResult
from nt_harness.stats import mean_ci, paired_test


def run(recipe, budget, correct, tokens=10):
    qids = [f"q{i}" for i in range(len(correct))]
    mean = sum(correct) / len(correct)
    return RunResult(
        recipe=recipe, budget=budget, student="s",
        results=[
            {"benchmark": "b", "task": "t", "metric": "exact_match", "filter": "none", "value": mean,
             "stderr": 0.05, "n": len(correct), "higher_is_better": True},
            {"benchmark": "b", "task": "t", "metric": "no_answer", "filter": "none", "value": 0.25,
             "stderr": 0.01, "n": len(correct), "higher_is_better": False},
        ],
        cost={"train_tokens": 100 * budget, "teacher_tokens": 5, "wall_s": 1.0},
        per_question={"t": {"exact_match": dict(zip(qids, correct)),
                            "response_tokens": dict.fromkeys(qids, tokens)}},
    )


def test_mcnemar_counts_only_discordant_pairs():
    a = {f"q{i}": 0.0 for i in range(20)}
    b = {f"q{i}": 1.0 if i < 8 else 0.0 for i in range(20)}
    r = paired_test(a, b)
    assert r["test"] == "McNemar (exact)" and r["n"] == 20 and r["diff"] == pytest.approx(0.4)
    assert r["p"] == pytest.approx(2 * 0.5 ** 8)  # 8 discordant pairs, all one way
    assert paired_test(a, a)["p"] == 1.0
    assert paired_test({"x": 1.0}, {"y": 0.0}) is None  # no common questions


def test_bootstrap_interval_brackets_the_mean():
    values = [1.0] * 30 + [0.0] * 70
    lo, hi = mean_ci(values)
    assert lo < 0.3 < hi and hi - lo < 0.25
    assert mean_ci([1.0]) is None


def test_summary_files_and_rerender(tmp_path):
    runs = [run(leaderboard.BASE, 0, [0.0] * 20),
            run("a", 16, [1.0 if i < 4 else 0.0 for i in range(20)]),
            run("b", 16, [1.0 if i < 12 else 0.0 for i in range(20)], tokens=30),
            run("a", 32, [1.0 if i < 6 else 0.0 for i in range(20)]),
            run("b", 32, [1.0 if i < 14 else 0.0 for i in range(20)])]
    folder = leaderboard.write(runs, tmp_path / "lb", "test board", {"profile": "p", "wall_s": 3.0})
    md = (folder / "leaderboard.md").read_text()
    assert "t exact_match ↑" in md and "0.6000 ± 0.0500" in md
    assert "+0.400 (p=0.0078)" in md  # b vs a at budget 16: 8 discordant pairs
    assert "![bars_t](bars_t.png)" in md and "![sweep_t](sweep_t.png)" in md
    assert (folder / "bars_t.png").stat().st_size > 1000 and (folder / "sweep_t.png").stat().st_size > 1000
    rows = (folder / "leaderboard.csv").read_text().splitlines()
    assert len(rows) == 1 + len(runs) and rows[2].startswith("a,16,s,0.2000 ± 0.0500")
    stored = json.loads((folder / "leaderboard.json").read_text())
    assert [r["recipe"] for r in stored["runs"]] == [r.recipe for r in runs]
    again, meta = leaderboard.load(folder)
    assert again == runs and meta["title"] == "test board"
    before = md
    leaderboard.write(again, folder, meta.pop("title"), {k: v for k, v in meta.items() if k != "created"})
    assert (folder / "leaderboard.md").read_text() == before
