"""Leaderboard numbers and files from hand-made runs: intervals, paired tests, plots, re-rendering."""

import hashlib
import json

import pytest

import nt_harness
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
    assert len(rows) == 1 + len(runs) and rows[2].startswith("a,16,,s,0.2000 ± 0.0500")  # examples: not given
    stored = json.loads((folder / "leaderboard.json").read_text())
    assert [r["recipe"] for r in stored["runs"]] == [r.recipe for r in runs]
    again, meta = leaderboard.load(folder)
    assert again == runs and meta["title"] == "test board"
    before = md
    leaderboard.write(again, folder, meta.pop("title"), {k: v for k, v in meta.items() if k != "created"})
    assert (folder / "leaderboard.md").read_text() == before


def filtered(recipe, budget, strict, flexible):
    """A run of task t read two ways, lm-eval style: filters strict and flexible, the task declaring the second
    its headline."""
    qids = [f"q{i}" for i in range(len(strict))]
    results, per_question = [], {"t": {"response_tokens": dict.fromkeys(qids, 10)}}
    for name, correct in (("strict", strict), ("flexible", flexible)):
        for metric, values in (("exact_match", correct), ("no_answer", [0.0] * len(correct))):
            results.append({"benchmark": "b", "task": "t", "metric": metric, "filter": name,
                            "value": sum(values) / len(values), "stderr": 0.05, "n": len(values),
                            "higher_is_better": metric != "no_answer",
                            "headline": "the flexible reading" if (metric, name) == ("exact_match", "flexible") else None})
            per_question["t"][f"{metric},{name}"] = dict(zip(qids, values))
    return RunResult(recipe=recipe, budget=budget, student="s", results=results,
                     cost={"train_tokens": 1, "teacher_tokens": 1, "wall_s": 1.0}, per_question=per_question)


def test_the_headline_is_the_metric_and_filter_the_task_declares_with_a_paired_test_against_base(tmp_path):
    runs = [filtered(leaderboard.BASE, 0, [0.0] * 20, [1.0] * 4 + [0.0] * 16),
            filtered("a", 16, [1.0] * 2 + [0.0] * 18, [1.0] * 14 + [0.0] * 6),
            filtered("b", 16, [1.0] * 20, [1.0] * 5 + [0.0] * 15)]
    summary = leaderboard.summarize(runs)
    assert [row["tasks"]["t"]["value"] for row in summary] == [0.2, 0.7, 0.25]  # flexible, not strict
    a, b = summary[1]["tasks"]["t"], summary[2]["tasks"]["t"]
    assert a["vs_base"]["diff"] == pytest.approx(0.5) and a["vs_base"]["p"] < 0.01  # 10 discordant, all one way
    assert b["paired"]["diff"] == pytest.approx(-0.45)  # against the first recipe, a
    headers, body = leaderboard.summary_table(summary)
    assert "t exact_match (flexible) ↑" in headers
    base_col, first_col = headers.index("Δ vs base (p)"), headers.index("Δ vs first (p)")
    assert [line[base_col] for line in body] == ["ref", "+0.500 (p=0.002)", "+0.050 (p=1)"]
    assert [line[first_col] for line in body] == ["", "ref", "-0.450 (p=0.0039)"]  # 9 discordant
    md = (leaderboard.write(runs, tmp_path / "lb", "filters", {}) / "leaderboard.md").read_text()
    assert "Headline `t`: the flexible reading." in md
    details = [line for line in leaderboard.detail_rows(runs) if line[0] == "a"]
    assert [(line[3], line[4]) for line in details] == [("flexible", "exact_match"), ("strict", "exact_match"),
                                                        ("flexible", "no_answer"), ("strict", "no_answer")]


def _entry(tmp_path, stage, wall_s, **stats):
    from nt_harness.store import Entry

    path = tmp_path / f"{stage}-{len(list(tmp_path.iterdir()))}"
    path.mkdir()
    (path / "manifest.json").write_text(json.dumps({"wall_s": wall_s, "stats": stats}))
    return Entry(stage, path.name, path)


def test_gpu_hours_from_stage_manifests(tmp_path):
    from nt_harness.pipeline import Pipeline

    cpu = [_entry(tmp_path, "teacher", 100.0, completion_tokens=5), _entry(tmp_path, "train", 50.0, device="cpu", gpus=0),
           _entry(tmp_path, "evaluate", 30.0, device="cpu", gpus=0)]
    assert "gpu_hours" not in Pipeline.cost(cpu)
    gpu = [_entry(tmp_path, "train", 1800.0, device="cuda", gpus=8, train_tokens=10),
           _entry(tmp_path, "evaluate", 3600.0, device="cuda", gpus=1),
           _entry(tmp_path, "evaluate", 999.0, device="remote", gpus=0)]  # a server's GPUs are not ours to count
    cost = Pipeline.cost(cpu[:1] + gpu)
    assert cost["gpu_hours"] == pytest.approx(1800 * 8 / 3600 + 1.0)
    assert cost["wall_s"] == pytest.approx(100 + 1800 + 3600 + 999)


def test_gpu_hours_column_only_when_a_row_ran_on_gpu(tmp_path):
    runs = [run(leaderboard.BASE, 0, [0.0] * 10), run("a", 16, [1.0] * 5 + [0.0] * 5)]
    headers, _ = leaderboard.summary_table(leaderboard.summarize(runs))
    assert "GPU-h" not in headers
    runs[1].cost["gpu_hours"] = 0.25
    headers, body = leaderboard.summary_table(leaderboard.summarize(runs))
    column = headers.index("GPU-h")
    assert [line[column] for line in body] == [leaderboard.NO_VALUE, "0.250"]


def moded(recipe, budget, by_mode):
    """A run of task t in several modes: mode -> (per-question correctness, tokens per question)."""
    results, per_question = [], {}
    for mode, (correct, tokens) in by_mode.items():
        task = "t" if mode == "think" else f"t@{mode}"
        qids = [f"q{i}" for i in range(len(correct))]
        results.append({"benchmark": "b", "task": task, "metric": "exact_match", "filter": "none",
                        "value": sum(correct) / len(correct), "stderr": 0.05, "n": len(correct),
                        "higher_is_better": True})
        per_question[task] = {"exact_match": dict(zip(qids, correct)), "response_tokens": dict.fromkeys(qids, tokens)}
    return RunResult(recipe=recipe, budget=budget, student="s", results=results,
                     cost={"train_tokens": 1, "teacher_tokens": 1, "wall_s": 1.0}, per_question=per_question)


def test_inference_modes_have_their_own_accuracy_tokens_and_paired_tests(tmp_path):
    runs = [moded("a", 16, {"think": ([1.0] * 8 + [0.0] * 12, 900), "no-think": ([1.0] * 4 + [0.0] * 16, 30)}),
            moded("b", 16, {"think": ([1.0] * 16 + [0.0] * 4, 800), "no-think": ([0.0] * 20, 20)})]
    summary = leaderboard.summarize(runs)
    a, b = summary
    assert a["tasks"]["t@no-think"]["gen_tokens"] == 30 and a["tasks"]["t"]["gen_tokens"] == 900
    assert (a["tasks"]["t@no-think"]["base"], a["tasks"]["t@no-think"]["mode"]) == ("t", "no-think")
    assert a["average"] == pytest.approx(0.4)  # the task's own mode only, not a mean over modes
    assert b["tasks"]["t"]["paired"]["diff"] == pytest.approx(0.4)  # paired per (task, mode)
    assert b["tasks"]["t@no-think"]["paired"]["diff"] == pytest.approx(-0.2)
    headers, body = leaderboard.summary_table(summary)
    assert headers.count("gen tok") == 2 and "900" in body[0] and "30" in body[0]
    assert leaderboard.mode_rows(summary)[:2] == [
        ["a", "16", "t", "think", "exact_match", "0.4000 ± 0.0500", "[0.200, 0.600]", "N/A", "900"],
        ["a", "16", "t", "no-think", "exact_match", "0.2000 ± 0.0500", "[0.050, 0.400]", "N/A", "30"]]
    folder = leaderboard.write(runs, tmp_path / "lb", "modes", {})
    md = (folder / "leaderboard.md").read_text()
    assert "## Inference modes" in md and "![modes_t](modes_t.png)" in md
    assert (folder / "modes_t.png").stat().st_size > 1000
    assert leaderboard.mode_rows(leaderboard.summarize([run("a", 16, [1.0, 0.0])])) == []  # no modes, no table


@pytest.mark.gpu
def test_a_train_stage_on_cuda_counts_gpu_hours(tiny_llama, tmp_path):
    """On a GPU the sft trainer's manifest records device and GPUs, and the cost turns them into GPU-hours
    (checked on an H100: 8 steps of the tiny Llama, 11.8 s -> 0.0033 GPU-h)."""
    import pyarrow as pa

    from nt_harness.pipeline import Pipeline
    from nt_harness.plugins import Plugins
    from nt_harness.progress import Progress
    from nt_harness.records import EXAMPLES
    from nt_harness.store import Store
    from nt_sft.trainer import SFTTrainer

    rows = [{"trace_id": f"t{i}", "question": f"What is {i} + {i}?", "thinking": f"{i} plus {i} is {2 * i}.",
             "answer": f"<answer>{2 * i}</answer>", "mode": "system2"} for i in range(8)]
    examples = pa.Table.from_pylist(rows, schema=EXAMPLES)
    pipe = Pipeline(Plugins(), Store(tmp_path), Progress(disable=True), threads=1)
    trainer = SFTTrainer(epochs=1, batch_size=4)
    entry = pipe.stage("train", trainer, {}, lambda ctx: trainer.train(examples, tiny_llama, ctx))
    stats = entry.manifest["stats"]
    assert stats["device"] == "cuda" and stats["gpus"] == 1
    assert Pipeline.cost([entry])["gpu_hours"] == pytest.approx(entry.manifest["wall_s"] / 3600, abs=1e-4)


def test_a_published_command_line_holds_no_path_of_this_machine(tmp_path, monkeypatch):
    from nt_harness.cli import published_args

    monkeypatch.chdir(tmp_path)
    argv = ["compare", "a", "b", "--workdir", "/scratch/me/store", "--results=/home/me/boards", "--profile",
            str(tmp_path / "configs" / "p.toml"), "--set", 'benchmarks.lmeval.local_data={m="/data/math500.jsonl"}',
            "--set", "trainer.lr=1e-5"]
    assert published_args(argv) == ["compare", "a", "b", "--profile", "configs/p.toml", "--set",
                                    'benchmarks.lmeval.local_data={m="math500.jsonl"}', "--set", "trainer.lr=1e-5"]


def test_a_third_party_benchmark_and_trainer_that_follow_the_types_fill_every_column(tmp_path):
    """tests/study_plugin.py knows only nt_harness.records: its `quiz` benchmark returns ResultRows (no-answer
    share, generated tokens, a second mode) and SAMPLES, its trainer and teacher StageStats (GPUs, examples,
    chat template, $), none of the names lm-eval or nt_sft write, and every column of the leaderboard is filled."""
    import study_plugin
    from nt_harness.pipeline import Pipeline
    from nt_harness.plugins import Plugins
    from nt_harness.progress import Progress
    from nt_harness.recipes import RunSpec, merge
    from nt_harness.store import Store

    pm = Plugins(load_entrypoints=False, extra=[study_plugin])
    pipe = Pipeline(pm, Store(tmp_path / "w"), Progress(disable=True), threads=1)
    spec = {**pm.profiles["study"].spec, "benchmarks": [{"name": "quiz"}], "budget": 3,
            "trainer": {"name": "memorize", "drop": 1, "gpus": 2}}
    runs = [pipe.baseline(RunSpec.of({**spec, "selector": {"name": "every-other"}}))]
    runs += [pipe.run(r, RunSpec.of(merge(spec, pm.recipes[r].spec))) for r in ("a", "b")]
    folder = leaderboard.write(runs, tmp_path / "lb", "a third party", {})
    summary = leaderboard.summarize(runs)
    headers, body = leaderboard.summary_table(summary)
    assert {"GPU-h", "Teacher $", "Examples trained", "quiz correct ↑", "quiz@no-think correct ↑"} <= set(headers)
    for line in body:
        empty = [h for h, cell in zip(headers, line) if cell in ("", "N/A", leaderboard.NO_VALUE)]
        assert empty == (["Δ vs first (p)"] * 2 if line[0] == leaderboard.BASE else []), (line[0], empty)
    assert [line[headers.index("Examples trained")] for line in body] == ["0", "2", "2"]  # budget 3, one dropped
    assert summary[1]["tasks"]["quiz@no-think"]["gen_tokens"] == 4 and summary[1]["tasks"]["quiz"]["no_answer"] < 1
    assert all(len(line) == len(leaderboard.MODE_HEADERS) and "N/A" not in line
               for line in leaderboard.mode_rows(summary))
    md = (folder / "leaderboard.md").read_text()
    assert "Headline `quiz`: a known answer, word for word." in md and "![modes_quiz](modes_quiz.png)" in md
    trained = [line for line in md[md.index("## Provenance"):].splitlines() if line.startswith(("| a ", "| b "))]
    assert len(trained) == 2 and all(hashlib.sha256(b"memorize").hexdigest()[:12] in line for line in trained)


def test_a_row_or_stat_off_the_types_is_named_before_it_is_stored():
    from nt_harness.records import result_rows, stage_stats

    row = {"benchmark": "b", "task": "t", "metric": "m", "value": 0.5}
    assert result_rows([row, {**row, "filter": None}], "benchmark b") == [row, {**row, "filter": "none"}]
    with pytest.raises(ValueError, match=r"^benchmark b: result row 1: no_anwser: Extra inputs are not permitted$"):
        result_rows([row, {**row, "no_anwser": 0.1}], "benchmark b")
    with pytest.raises(ValueError, match=r"^benchmark b: result row 0: value: Input should be a valid number"):
        result_rows([{**row, "value": "high"}], "benchmark b")
    assert stage_stats({"gpus": 8, "device": "cuda", "loss_curve": [1.0]}, "train t").gpus == 8  # its own keys too
    with pytest.raises(ValueError, match=r"^train t: stats: gpus: Input should be a valid number"):
        stage_stats({"gpus": "eight"}, "train t")
    with pytest.raises(ValueError, match=r"^train t: stats: provenance.chat_template_sha: Input should be a valid"):
        stage_stats({"provenance": {"chat_template_sha": 1}}, "train t")


def test_examples_trained_are_the_trainers_count_else_all_it_was_given(tmp_path):
    """A trainer that says nothing of them trained on every kept trace: the selection's count shows."""
    import study_plugin
    from nt_harness.components import Trainer
    from nt_harness.pipeline import Pipeline
    from nt_harness.plugins import Plugins
    from nt_harness.progress import Progress
    from nt_harness.recipes import RunSpec
    from nt_harness.store import Store

    class Quiet(Trainer):
        name = "quiet"

        def train(self, examples, student, ctx):
            (ctx.out / "model").mkdir()
            return {}

    class Plugin:
        @nt_harness.hookimpl
        def register_trainers(register):
            register(Quiet)

    pm = Plugins(load_entrypoints=False, extra=[study_plugin, Plugin])
    pipe = Pipeline(pm, Store(tmp_path), Progress(disable=True), threads=1)
    spec = {**pm.profiles["study"].spec, "selector": {"name": "every-other"}, "budget": 3}
    assert pipe.run("a", RunSpec.of({**spec, "trainer": {"name": "quiet"}})).examples == 3
    assert pipe.run("a", RunSpec.of({**spec, "trainer": {"name": "memorize", "drop": 2}})).examples == 1
    assert pipe.baseline(RunSpec.of(spec)).examples == 0
