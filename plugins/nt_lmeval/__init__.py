"""The `lmeval` benchmark: EleutherAI lm-evaluation-harness on a model folder, offline, with the
project's local tasks (tasks/, shipped in the wheel as nt_lmeval/tasks) and per-sample outputs kept for
paired comparisons.

Inference modes (NaturalThoughts, arXiv 2507.01921, Table 4: System-2 only reaches 37.6 % on GPQA-Diamond
at 8,741 generated tokens, System-1 only 34.0 % at 321): each task can be run as
  think     the task's own prompt (the student reasons as it was trained to); task name unchanged;
  no-think  a system instruction to answer directly, and the assistant turn prefilled with an empty
            thinking block (lm-eval's `gen_prefix`), so the student answers at once; `<task>@no-think`;
  adaptive  a system instruction to think step by step only if the question needs it; `<task>@adaptive`.
Each mode is its own lm-eval task (a copy of the task with lm-eval's own `description` and `gen_prefix`
fields set), so it has its own result rows, samples (paired tests per task and mode) and mean tokens.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, get_args

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, field_validator

import nt_harness
from nt_harness.components import Benchmark, Settings
from nt_harness.models import cpu_dtype
from nt_harness.recipes import SpecError

SAMPLES = pa.schema(
    [
        ("task", pa.string()),
        ("filter", pa.string()),  # lm-eval's filter: one row per question and filter
        ("doc_id", pa.int64()),
        ("question_id", pa.string()),
        ("exact_match", pa.float64()),
        ("score", pa.float64()),
        ("no_answer", pa.float64()),
        ("response_tokens", pa.int64()),
        ("mode", pa.string()),
        # among the question's repeats; when sampling, fewer than the repeats points at a seeding problem
        ("distinct_responses", pa.int64()),
        # what `nt-harness view` shows of each answer: the question, the reference, the first response (of the
        # repeats) and what the filter extracted from it
        ("question", pa.string()),
        ("target", pa.string()),
        ("response", pa.string()),
        ("extracted", pa.string()),
    ]
)

# lm-eval model arguments that the settings own (model, max_length, seed, base_url): not in `model_args`
OWNED_MODEL_ARGS = {"pretrained", "model", "max_length", "max_model_len", "seed", "base_url"}
Mode = Literal["think", "no-think", "adaptive"]
MODES = get_args(Mode)
MODE_SEPARATOR = "@"  # gym_heldout@no-think: the leaderboard reads the mode from the task name
NO_THINK_INSTRUCTION = (
    "Answer directly, without thinking step by step and without showing any working. "
    "Give the final answer in the format the question asks for."
)
ADAPTIVE_INSTRUCTION = (
    "First decide whether the question needs step-by-step reasoning. Think step by step inside "
    "<think></think> tags only if the question needs it; if it is easy, skip the thinking and answer "
    "directly. Give the final answer in the format the question asks for."
)


def mode_task_name(task: str, mode: str) -> str:
    """`think` keeps the task's own name (its protocol), so think results compare across runs."""
    return task if mode == "think" else f"{task}{MODE_SEPARATOR}{mode}"


def task_mode(name: str) -> str:
    return name.split(MODE_SEPARATOR, 1)[1] if MODE_SEPARATOR in name else "think"


def tasks_dir() -> Path:
    """Installed wheel: nt_lmeval/tasks (pyproject force-includes tasks/ there); a checkout: <repo>/tasks."""
    packaged = Path(__file__).parent / "tasks"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "tasks"


@functools.cache
def local_tasks() -> list[str]:
    """The tasks, groups and tags of this project's tasks/."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(tasks_dir()), include_defaults=False).all_tasks


@functools.cache
def known_task(name: str) -> bool:
    """Whether lm-eval knows ``name`` (a task, group or tag) here or in this project's tasks/. Indexing lm-eval's
    ~15k built-in task files takes ~20 s, so a name none of those files mentions is unknown at once."""
    from lm_eval.tasks import TaskManager

    if name in local_tasks():
        return True
    builtin = Path(importlib.util.find_spec("lm_eval").submodule_search_locations[0]) / "tasks"
    if not any(name in path.read_text(errors="ignore") for path in builtin.rglob("*.yaml")):
        return False
    return name in TaskManager(include_path=str(tasks_dir())).all_tasks


@contextmanager
def offline_env(hf_datasets_cache: Path, offline: bool = True, defaults: dict | None = None):
    """No hub (unless downloads are allowed), a datasets cache inside the workdir, and `defaults` for variables
    the environment does not set itself, for one evaluation."""
    values = {"HF_DATASETS_CACHE": str(hf_datasets_cache)}
    if offline:
        values |= {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    values |= {k: v for k, v in (defaults or {}).items() if k not in os.environ}
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
    version = "4"  # 4: samples.parquet carries each answer's texts
    description = "lm-evaluation-harness generate/score on local tasks (default: held-out reasoning-gym)"

    class Settings(Settings):
        tasks: list[str] = ["gym_heldout"]
        limit: int | None = None  # rows per task; None = all (a number is for smoke tests only)
        max_gen_toks: int = 256  # lm-eval's own default is too short for reasoning; always explicit
        max_length: int = 2048
        batch_size: int = 8
        seed: int = 0
        # task name -> local data file for the reasoning presets (tasks/*_reasoning), which otherwise
        # download their hub dataset; passed as lm-eval metadata `local_data` (see nt_lmeval.reasoning)
        local_data: dict[str, str] = {}
        download: bool = False  # let a preset without a local file fetch its hub dataset
        repeats: int | None = None  # samples per question; None = each task's protocol (MATH-500: 16)
        greedy: bool = False  # one greedy sample per question instead of the tasks' sampling settings
        # hf: transformers in this process; vllm: vLLM in this process (the `vllm` extra);
        # local-chat-completions: an OpenAI-compatible server already serving the model at base_url
        backend: Literal["hf", "vllm", "local-chat-completions"] = "hf"
        base_url: str | None = None  # e.g. http://127.0.0.1:8000/v1/chat/completions
        served_model: str | None = None  # the server's name for the model; default: the model folder
        # more of lm-eval's model arguments for the backend, e.g. {"gpu_memory_utilization": 0.25,
        # "enforce_eager": true} for vLLM on a CPU (nt_vllm.cpu_venv), or a dtype; not those set above
        model_args: dict = Field(default_factory=dict)
        # inference modes, each its own result rows (see the module docstring); ["think"] = the tasks as is
        modes: list[Mode] = Field(default_factory=lambda: ["think"])
        no_think_prefill: str = "<think>\n\n</think>\n"  # the no-think assistant turn starts with this
        # vLLM's chat server continues a prefilled assistant turn only when asked; these go with each
        # no-think request on local-chat-completions ({} for a server that refuses unknown fields)
        chat_prefill_kwargs: dict = Field(
            default_factory=lambda: {"continue_final_message": True, "add_generation_prompt": False})
        # sampling overrides for every task (e.g. 0.7 / 1.0 for Qwen students, NaturalThoughts §4; or
        # temperature > 0 with `repeats` on a greedy task); None = each task's own setting
        temperature: float | None = Field(None, ge=0.0)
        top_p: float | None = Field(None, gt=0.0, le=1.0)

        @field_validator("model_args")
        @classmethod
        def _model_args(cls, args: dict) -> dict:
            owned = sorted(set(args) & OWNED_MODEL_ARGS)
            if owned:
                raise ValueError(f"{', '.join(owned)}: set through the benchmark's own settings, not model_args")
            if "think_end_token" in args:
                raise ValueError("think_end_token: the tasks read the answer after </think> themselves (see "
                                 "nt_lmeval.reasoning); lm-eval's would score cut-off thinking as an answer")
            return args

        @field_validator("modes")
        @classmethod
        def _modes(cls, modes: list[str]) -> list[str]:
            if not modes or len(set(modes)) != len(modes):
                raise ValueError(f"give one or more distinct modes of {', '.join(MODES)}")
            return modes

    def task_manager(self):
        from lm_eval.tasks import TaskManager

        files = {task: str(Path(path).expanduser().resolve()) for task, path in self.settings.local_data.items()}
        metadata = {"local_data": files}
        local = TaskManager(include_path=str(tasks_dir()), include_defaults=False, metadata=metadata)
        if all(t in local.all_tasks for t in self.settings.tasks):
            return local  # indexing lm-eval's ~15k built-in tasks costs ~8 s; skip it when all are ours
        return TaskManager(include_path=str(tasks_dir()), metadata=metadata)

    def check(self) -> None:
        """Task names and local data files, before any training: a typo otherwise fails in lm-eval afterwards."""
        unknown = [t for t in self.settings.tasks if not known_task(t)]
        if unknown:
            raise SpecError(f"lmeval: unknown task(s) {', '.join(map(repr, unknown))}: neither lm-eval nor this "
                            f"project's tasks/ has them (ours: {', '.join(local_tasks())})")
        missing = {t: p for t, p in self.settings.local_data.items() if not Path(p).expanduser().is_file()}
        if missing:
            raise SpecError("lmeval: local_data: no such file "
                            + ", ".join(f"{p} (task {t})" for t, p in missing.items()))

    def load_tasks(self, manager) -> list:
        """The tasks as lm-eval Task objects, one copy per mode, with `repeats` overridden when set
        (greedy: one sample)."""
        s = self.settings
        repeats = 1 if s.greedy else s.repeats
        tasks = []
        for mode in s.modes:
            for task in manager.load(list(s.tasks))["tasks"].values():  # fresh objects for each mode
                self.apply_mode(task, mode)
                if repeats is not None:
                    task.config.repeats = repeats
                tasks.append(task)
        return tasks

    def questions(self) -> dict[str, list[str]]:
        """task -> its questions as lm-eval renders them (the task's own docs through its doc_to_text), so a
        selector decontaminates against exactly what this benchmark evaluates: local data_files tasks and hub
        presets alike. Every row, whatever `limit` (a smoke-test limit must not let the rest leak). Modes add a
        system instruction or an assistant prefix, never change the question, so each task appears once.
        A task lm-eval cannot load (offline hub preset without `local_data`) is one line naming it."""
        import datasets

        manager = self.task_manager()
        out: dict[str, list[str]] = {}
        with offline_env(Path(datasets.config.HF_DATASETS_CACHE), offline=not self.settings.download):
            for name in self.settings.tasks:
                try:
                    loaded = manager.load([name])["tasks"]
                except Exception as e:  # lm-eval raises whatever the task's loader raised
                    reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
                    raise SpecError(f"lmeval: cannot read the questions of task {name!r}: {reason}") from None
                for task_name, task in loaded.items():
                    out[task_name] = [str(task.doc_to_text(doc)) for doc in task.eval_docs]
        return out

    def apply_mode(self, task, mode: str) -> None:
        """Rename the task for its mode and set lm-eval's own prompt fields: `description` (rendered as the
        system message under a chat template) and `gen_prefix` (the start of the assistant turn)."""
        if mode == "think":
            return
        config = task.config
        config.task = mode_task_name(config.task, mode)
        instruction = NO_THINK_INSTRUCTION if mode == "no-think" else ADAPTIVE_INSTRUCTION
        config.description = f"{instruction}\n\n{config.description}" if config.description else instruction
        if mode == "no-think":
            config.gen_prefix = self.settings.no_think_prefill + (config.gen_prefix or "")
            if self.settings.backend == "local-chat-completions" and self.settings.chat_prefill_kwargs:
                config.generation_kwargs = {**(config.generation_kwargs or {}), **self.settings.chat_prefill_kwargs}

    def generation_kwargs(self) -> dict:
        """Overrides merged into each task's generation_kwargs; max_gen_toks is always explicit.

        lm-eval's chat-completions client sends the same `seed` with every request, so a server that
        honours it (llama.cpp, vLLM) returns one sample `repeats` times; a null seed lets them differ.
        """
        s = self.settings
        if s.greedy:
            return {"max_gen_toks": s.max_gen_toks, "do_sample": False, "temperature": 0.0}
        unseeded = {"seed": None} if s.backend == "local-chat-completions" else {}
        sampling = {}
        if s.temperature is not None:
            sampling = {"temperature": s.temperature, "do_sample": s.temperature > 0}
        if s.top_p is not None:
            sampling["top_p"] = s.top_p
        return {"max_gen_toks": s.max_gen_toks, **unseeded, **sampling}

    def model_args(self, model: str) -> dict:
        """lm-eval's model arguments for the backend, then `model_args`; the maximum length is always explicit."""
        s = self.settings
        if s.backend == "vllm":
            args = {"pretrained": model, "dtype": "auto", "max_model_len": s.max_length, "seed": s.seed}
        elif s.backend == "local-chat-completions":
            if not s.base_url:
                raise ValueError("backend local-chat-completions needs base_url (the server's chat completions URL)")
            args = {"model": s.served_model or model, "base_url": s.base_url, "max_length": s.max_length,
                    "num_concurrent": s.batch_size, "tokenizer_backend": None, "tokenized_requests": False,
                    "seed": s.seed}
        else:
            device = self.device()["device"]
            # bf16 where the CPU computes it natively (nt_harness.models.cpu_dtype)
            args = {"pretrained": model, "dtype": "bfloat16" if device == "cuda" else cpu_dtype(), "device": device,
                    "max_length": s.max_length}
        return {**args, **s.model_args}

    def device(self) -> dict:
        """Where the model runs, for the stage's manifest (the leaderboard's GPU-hours): one GPU for hf and
        vllm as configured here; a server's own hardware is unknown ("remote", no GPUs counted)."""
        if self.settings.backend == "local-chat-completions":
            return {"device": "remote", "gpus": 0}
        import torch

        return {"device": "cuda", "gpus": 1} if torch.cuda.is_available() else {"device": "cpu", "gpus": 0}

    def evaluate(self, model: str, ctx) -> list[dict]:
        import lm_eval
        import torch
        from lm_eval.loggers import EvaluationTracker

        s = self.settings
        torch.set_num_threads(ctx.threads)
        tracker = EvaluationTracker(output_path=str(ctx.out / "lm_eval"))
        manager = self.task_manager()
        # vLLM samples reproducibly under its seed only with its engine core in this process, where scheduling is
        # deterministic (docs.vllm.ai, usage/reproducibility); lm-eval sends no per-request seed, so otherwise
        # the same seed draws different repeats from run to run
        engine = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"} if s.backend == "vllm" else {}
        with offline_env(ctx.workdir / "hf-datasets", offline=not s.download, defaults=engine), ctx.progress.task(
            f"lm-eval {', '.join(s.tasks)} on {Path(model).name}", total=None
        ):
            out = lm_eval.simple_evaluate(
                model=s.backend,
                model_args=self.model_args(model),
                tasks=self.load_tasks(manager),
                task_manager=manager,
                batch_size="auto" if s.backend == "vllm" else s.batch_size,
                limit=s.limit,
                gen_kwargs=self.generation_kwargs(),
                apply_chat_template=True,
                log_samples=True,
                evaluation_tracker=tracker,
                # lm-eval's request cache (SQLite, committed as each request finishes) in the stage's scratch,
                # which is keyed by the checkpoint and kept until the stage is stored: a killed evaluation
                # resumes with the requests it had answered. lm-eval leaves sampled requests out of it.
                use_cache=str(ctx.scratch / "lm-eval-requests"),
                random_seed=s.seed,
                numpy_random_seed=s.seed,
                torch_random_seed=s.seed,
                fewshot_random_seed=s.seed,
            )
        tracker.save_results_aggregated(results=out, samples=out["samples"])
        for task in out["configs"]:
            tracker.save_results_samples(task_name=task, samples=out["samples"][task])
        samples = self.sample_table(out["samples"], model, s.no_think_prefill)
        pq.write_table(samples, ctx.out / "samples.parquet")
        ctx.stats["samples"] = samples.num_rows
        ctx.stats["response_tokens"] = sum(samples.column("response_tokens").to_pylist())
        ctx.stats["modes"] = list(s.modes)
        ctx.stats.update(self.device())
        return self.result_rows(out)

    @staticmethod
    def result_rows(out: dict) -> list[dict]:
        """One row per (task or group, metric, filter), from lm-eval's results dict. A task names its headline
        ``metric,filter`` and why in its YAML metadata (``headline``, ``headline_note``)."""
        rows = []
        for task, metrics in {**out["results"], **out.get("groups", {})}.items():
            n = out.get("n-samples", {}).get(task, {}).get("effective")
            better = out.get("higher_is_better", {}).get(task, {})
            declared = (out.get("configs", {}).get(task, {}).get("metadata") or {})
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
                    "headline": (declared.get("headline_note") or "the task's headline number")
                    if declared.get("headline") == key else None,
                })
        return rows

    @staticmethod
    def sample_table(samples: dict, model: str, prefill: str = "") -> pa.Table:
        """Per-question correctness, for paired tests between checkpoints on the same questions.

        Generated tokens leave out the no-think prefill, which some servers (llama.cpp) return as part of
        the message they continued.
        """
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model)
        rows = []
        for task, items in samples.items():
            for item in items:
                responses = item["resps"][0] if item["resps"] and item["resps"][0] else [""]
                responses = [responses] if isinstance(responses, str) else list(responses)
                if prefill and task_mode(task) == "no-think":
                    responses = [r[len(prefill):] if r.startswith(prefill) else r for r in responses]
                doc = item["doc"]
                rows.append({
                    "task": task,
                    "filter": item.get("filter", "none"),
                    "doc_id": int(item["doc_id"]),
                    # tasks whose docs carry no question_id fall back to lm-eval's hash of the doc
                    "question_id": doc.get("question_id") or item.get("doc_hash"),
                    "exact_match": _number(item.get("exact_match")),
                    "score": _number(item.get("score")),
                    "no_answer": _number(item.get("no_answer")),
                    # mean over the repeats (a preset samples each question several times)
                    "response_tokens": round(sum(len(ids) for ids in tokenizer(
                        responses, add_special_tokens=False).input_ids) / len(responses)),
                    "mode": task_mode(task),
                    "distinct_responses": len(set(responses)),
                    "question": _question(doc, item),
                    "target": str(item.get("target", "")),
                    "response": responses[0],
                    "extracted": _first_text(item.get("filtered_resps")),
                })
        return pa.Table.from_pylist(rows, schema=SAMPLES)


def _question(doc: dict, item: dict) -> str:
    """The question as a person reads it: the doc's own text where a task names it, else the prompt sent."""
    for field in ("question", "problem", "Question", "query"):
        if isinstance(doc.get(field), str):
            return doc[field]
    return _first_text(item.get("arguments"))


def _first_text(value) -> str:
    """The first string inside lm-eval's nested lists and argument dicts."""
    while isinstance(value, (list, tuple, dict)) and value:
        value = next(iter(value.values())) if isinstance(value, dict) else value[0]
    return value if isinstance(value, str) else ""


def _number(value) -> float | None:
    """A sample's metric value; None for a task that has no such metric."""
    return None if value is None else float(value)


@nt_harness.hookimpl
def register_benchmarks(register):
    register(LMEvalBenchmark)
