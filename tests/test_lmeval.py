"""The gym_heldout lm-eval task and the lmeval benchmark, end to end on a tiny random Llama."""

import importlib.util
import json

import pyarrow.parquet as pq
import pytest

from nt_gym.heldout import heldout_ids
from nt_harness.components import Context
from nt_harness.progress import Progress
from nt_harness.records import RESULT_FIELDS
from nt_lmeval import LMEvalBenchmark, tasks_dir


@pytest.fixture(scope="module")
def utils():
    spec = importlib.util.spec_from_file_location("gym_heldout_utils", tasks_dir() / "gym_heldout" / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_task_loads_in_lmeval_from_any_cwd(tmp_path, monkeypatch):
    from lm_eval.tasks import TaskManager

    monkeypatch.chdir(tmp_path)  # data_files is relative to the task folder, not the cwd
    manager = TaskManager(include_path=str(tasks_dir()), include_defaults=False)
    task = manager.load_task_or_group(["gym_heldout"])["gym_heldout"]
    docs = list(task.test_docs())
    assert len(docs) == len(heldout_ids())
    assert {d["question_id"] for d in docs} == heldout_ids()
    assert task.config.generation_kwargs["do_sample"] is False


def _doc(family="lcm"):
    rows = [json.loads(line) for line in (tasks_dir() / "gym_heldout" / "gym_heldout.jsonl").read_text().splitlines()]
    return next(r for r in rows if r["dataset"] == family)


def test_process_results_on_hand_written_responses(utils):
    doc = _doc()
    ref = doc["answer"]
    right = {"exact_match": 1.0, "score": 1.0, "no_answer": 0.0}
    missing = {"exact_match": 0.0, "score": 0.0, "no_answer": 1.0}
    assert utils.process_results(doc, [f"<think>\nmultiples...\n</think>\n<answer>{ref}</answer>"]) == right
    assert utils.process_results(doc, [f"<answer>{ref}</answer>"]) == right
    assert utils.process_results(doc, ["<answer>none</answer>"]) == {"exact_match": 0.0, "score": 0.0, "no_answer": 0.0}
    assert utils.process_results(doc, [f"<think>\nit is <answer>{ref}</answer> I guess, but"]) == missing
    assert utils.process_results(doc, ["   \n"]) == missing
    partial = utils.process_results(doc, [f"<answer>The answer is {ref}.</answer>"])  # reasoning-gym's partial credit
    assert partial["exact_match"] == 0.0 and 0.0 < partial["score"] < 1.0


def test_benchmark_runs_a_tiny_model(tiny_llama, tmp_path):  # tiny_llama: tests/conftest.py
    ctx = Context(out=tmp_path / "out", scratch=tmp_path, workdir=tmp_path, threads=1,
                  progress=Progress(disable=True))
    ctx.out.mkdir()
    rows = LMEvalBenchmark(limit=4, max_gen_toks=16).evaluate(tiny_llama, ctx)
    assert {(r["task"], r["metric"]) for r in rows} == {("gym_heldout", m) for m in ("exact_match", "score", "no_answer")}
    for r in rows:
        assert tuple(r) == RESULT_FIELDS
        assert r["n"] == 4 and r["benchmark"] == "lmeval" and 0.0 <= r["value"] <= 1.0
    assert {r["metric"]: r["higher_is_better"] for r in rows} == {"exact_match": True, "score": True, "no_answer": False}
    samples = pq.read_table(ctx.out / "samples.parquet")
    assert samples.num_rows == 4
    assert samples.column("doc_id").to_pylist() == [0, 1, 2, 3]
    assert set(samples.column("question_id").to_pylist()) <= heldout_ids()
    assert all(0 < t <= 16 for t in samples.column("response_tokens").to_pylist())
    assert list((ctx.out / "lm_eval").rglob("samples_gym_heldout_*.jsonl"))
    assert list((ctx.out / "lm_eval").rglob("results_*.json"))
