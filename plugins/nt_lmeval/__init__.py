"""The `lmeval` benchmark: EleutherAI lm-evaluation-harness on a model folder, offline, with the
project's local tasks (tasks/, shipped in the wheel as nt_lmeval/tasks) and per-sample outputs kept for
paired comparisons."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import nt_harness
from nt_harness.components import Benchmark, Settings

SAMPLES = pa.schema(
    [
        ("task", pa.string()),
        ("doc_id", pa.int64()),
        ("question_id", pa.string()),
        ("exact_match", pa.float64()),
        ("score", pa.float64()),
        ("no_answer", pa.float64()),
        ("response_tokens", pa.int64()),
    ]
)


def tasks_dir() -> Path:
    """Installed wheel: nt_lmeval/tasks (pyproject force-includes tasks/ there); a checkout: <repo>/tasks."""
    packaged = Path(__file__).parent / "tasks"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "tasks"


@contextmanager
def offline_env(hf_datasets_cache: Path):
    """No hub, and a datasets cache inside the workdir, for the duration of one evaluation."""
    values = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(hf_datasets_cache)}
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class LMEvalBenchmark(Benchmark):
    name = "lmeval"
    version = "2"
    description = "lm-evaluation-harness generate/score on local tasks (default: held-out reasoning-gym)"

    class Settings(Settings):
        tasks: list[str] = ["gym_heldout"]
        limit: int | None = None  # rows per task; None = all (a number is for smoke tests only)
        max_gen_toks: int = 256  # lm-eval's own default is too short for reasoning; always explicit
        max_length: int = 2048
        batch_size: int = 8
        seed: int = 0

    def task_manager(self):
        from lm_eval.tasks import TaskManager

        local = TaskManager(include_path=str(tasks_dir()), include_defaults=False)
        if all(t in local.all_tasks for t in self.settings.tasks):
            return local  # indexing lm-eval's ~15k built-in tasks costs ~8 s; skip it when all are ours
        return TaskManager(include_path=str(tasks_dir()))

    def evaluate(self, model: str, ctx) -> list[dict]:
        import lm_eval
        import torch
        from lm_eval.loggers import EvaluationTracker

        s = self.settings
        torch.set_num_threads(ctx.threads)
        tracker = EvaluationTracker(output_path=str(ctx.out / "lm_eval"))
        with offline_env(ctx.workdir / "hf-datasets"), ctx.progress.task(
            f"lm-eval {', '.join(s.tasks)} on {Path(model).name}", total=None
        ):
            out = lm_eval.simple_evaluate(
                model="hf",
                model_args={"pretrained": model, "dtype": "float32", "device": "cpu", "max_length": s.max_length},
                tasks=list(s.tasks),
                task_manager=self.task_manager(),
                batch_size=s.batch_size,
                limit=s.limit,
                gen_kwargs={"max_gen_toks": s.max_gen_toks},
                apply_chat_template=True,
                log_samples=True,
                evaluation_tracker=tracker,
                random_seed=s.seed,
                numpy_random_seed=s.seed,
                torch_random_seed=s.seed,
                fewshot_random_seed=s.seed,
            )
        tracker.save_results_aggregated(results=out, samples=out["samples"])
        for task in out["configs"]:
            tracker.save_results_samples(task_name=task, samples=out["samples"][task])
        samples = self.sample_table(out["samples"], model)
        pq.write_table(samples, ctx.out / "samples.parquet")
        ctx.stats["samples"] = samples.num_rows
        ctx.stats["response_tokens"] = sum(samples.column("response_tokens").to_pylist())
        return self.result_rows(out)

    @staticmethod
    def result_rows(out: dict) -> list[dict]:
        """One row per (task or group, metric, filter), from lm-eval's results dict."""
        rows = []
        for task, metrics in {**out["results"], **out.get("groups", {})}.items():
            n = out.get("n-samples", {}).get(task, {}).get("effective")
            better = out.get("higher_is_better", {}).get(task, {})
            for key, value in metrics.items():
                if "," not in key or "_stderr," in key:
                    continue
                metric, filt = key.split(",", 1)
                stderr = metrics.get(f"{metric}_stderr,{filt}")
                rows.append({
                    "benchmark": "lmeval",
                    "task": task,
                    "metric": metric,
                    "filter": filt,
                    "value": float(value),
                    "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
                    "n": n,
                    "higher_is_better": better.get(metric),
                })
        return rows

    @staticmethod
    def sample_table(samples: dict, model: str) -> pa.Table:
        """Per-question correctness, for paired tests between checkpoints on the same questions."""
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model)
        rows = []
        for task, items in samples.items():
            for item in items:
                response = item["resps"][0][0] if item["resps"] and item["resps"][0] else ""
                doc = item["doc"]
                rows.append({
                    "task": task,
                    "doc_id": int(item["doc_id"]),
                    # tasks whose docs carry no question_id fall back to lm-eval's hash of the doc
                    "question_id": doc.get("question_id") or item.get("doc_hash"),
                    "exact_match": _number(item.get("exact_match")),
                    "score": _number(item.get("score")),
                    "no_answer": _number(item.get("no_answer")),
                    "response_tokens": len(tokenizer(response, add_special_tokens=False).input_ids),
                })
        return pa.Table.from_pylist(rows, schema=SAMPLES)


def _number(value) -> float | None:
    """A sample's metric value; None for a task that has no such metric."""
    return None if value is None else float(value)


@nt_harness.hookimpl
def register_benchmarks(register):
    register(LMEvalBenchmark)
