"""Supervised fine-tuning of a student on chosen traces, with Hugging Face Accelerate.

One file, read top to bottom: render each example with the student's own chat template, train on the
assistant turn only (end-of-turn token included, so the student learns to stop), normalise the loss by
the target tokens of the whole gradient-accumulation window, checkpoint into ``ctx.scratch`` so a killed
run resumes, and write a folder that lm-eval's ``hf`` backend and vLLM load, with ``metrics.parquet`` beside it
(one row per optimizer step: loss, lr, gradient norm, tokens, speed), also sent to Accelerate's trackers when
``report_to`` names them. What one optimizer step does (batching, packing, the loss) lives in ``nt_sft.steps``,
which a bare GPU box can import on its own.

With ``packing`` several examples share one sequence, their position ids restarting at 0 and no attention
between them; with ``num_processes`` > 1 the stage relaunches itself through ``accelerate launch``
(``nt_sft.launch``), which is also how a multi-GPU or multi-node run is started by hand.

The defaults follow NaturalThoughts (Li et al., 2025, §4 "Experimental setup"): AdamW with weight decay
0.1 and a constant learning rate of 2e-5. Only complete responses are trained on, so an example longer
than ``max_length`` is dropped and counted, never truncated.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field, field_validator, model_validator

from nt_harness.components import Context, Settings, Trainer
from nt_sft.steps import (  # noqa: F401  (re-exported: the tests and benchmarks use them from here)
    IGNORE,
    EpochShuffle,
    Layout,
    backward_window,
    build_optimizer,
    build_schedule,
    fsdp_precision,
    make_accelerator,
    optimizer_step,
    pack_batch,
    pack_examples,
    pad_batch,
    skip_output_upcast,
    token_loss_sum,
)

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger("nt_harness")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # torch.compile modes that replay CUDA graphs


class SFTTrainer(Trainer):
    name = "sft"
    version = "2"  # 2: metrics.parquet, one row per optimizer step
    description = "supervised fine-tuning (full or LoRA) on Accelerate; loss on the assistant turn only"

    class Settings(Settings):
        # NaturalThoughts §4: AdamW, weight decay 0.1, constant learning rate 2e-5.
        lr: float = 2e-5
        epochs: int = 2
        batch_size: int = 4  # examples per micro-batch; with packing, packed sequences per micro-batch
        grad_accum: int = 1
        # the batch a paper states (examples, or packed sequences, per optimizer step); when set, grad_accum is
        # derived from it as global_batch / (batch_size x num_processes), which must divide it
        global_batch: int | None = Field(None, ge=1)
        max_length: int = 1024  # longer examples are dropped (counted), never truncated
        packing: bool = False  # several examples per sequence, no attention across them
        pack_length: int | None = None  # tokens per packed sequence; None: max_length
        weight_decay: float = 0.1
        adam_beta2: float = 0.999
        max_grad_norm: float = 1.0  # 0 turns clipping off (the norm is still measured, for metrics.parquet)
        schedule: Literal["constant", "cosine", "cosine_min"] = "constant"
        min_lr_ratio: float = 0.1  # floor of "cosine_min", as a fraction of lr
        warmup_ratio: float = 0.0
        lora: bool = False
        lora_r: int = 16
        lora_alpha: int = 32
        lora_dropout: float = 0.0
        lora_targets: str | list[str] = "all-linear"
        gradient_checkpointing: bool = False
        mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 autocast, fp32 weights
        # auto, on a GPU: flash_attention_2 with the flash-attn package, else varlen (PyTorch's own flash varlen
        # kernel), else sdpa; on CPU: sdpa
        attn_implementation: Literal["auto", "sdpa", "eager", "flex_attention", "flash_attention_2",
                                     "flash_attention_3", "varlen"] = "auto"
        # Liger's Triton kernels (RMSNorm, RoPE, SwiGLU); auto: on a CUDA GPU with liger-kernel installed and
        # a model family it covers. Off by default: on an H100 they made a Qwen2.5-0.5B-shaped model at 8k
        # packed tokens slower (48.7k vs 51.0k tok/s with varlen attention; benchmarks/gpu_mfu.py)
        liger: Literal["auto"] | bool = False
        liger_fused_ce: bool = False  # Liger's fused linear cross-entropy too: less memory, slower (steps.apply_liger)
        # torch.compile (inductor) of each decoder layer through Accelerate (steps.dynamo_plugin), and of the loss
        # (steps.compile_loss): for GPU throughput on long runs; on a CPU or a short run the compilation (tens of
        # seconds) costs more than it saves. Part of the cache key, not an execution setting: compiled kernels may
        # round differently in the last bits. With packing, every batch gets one shape (steps.Layout: packs padded
        # to pack_length) and is compiled once
        compile: bool = False
        # torch.compile's mode: reduce-overhead replays each compiled layer as a CUDA graph (no per-kernel launch
        # cost: on an H100 an eager step left the GPU idle half the time); needs packing (one shape) and grad_accum 1
        compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
        num_processes: int = 1  # > 1: the stage runs itself under `accelerate launch` with this many processes
        # an accelerate config file for that launch (configs/accelerate/); given, even one process is launched
        # with it (one GPU under fsdp.yaml computes in bf16 through FSDP's mixed precision, not autocast)
        accelerate_config: str | None = None
        seed: int = 0
        save_every_steps: int = 0  # 0: no intermediate checkpoints, the model is written at the end
        system_prompt: str | None = None
        # Accelerate trackers that get each step's metrics row as well (tensorboard, wandb, trackio, mlflow, ...),
        # writing files (TensorBoard's events) under logging_dir, by default the stage output's trackers/ folder.
        # Execution settings, out of the cache key: where a run is watched does not change what it trains
        report_to: list[str] = []
        logging_dir: str | None = None

        @field_validator("report_to")
        @classmethod
        def _trackers_accelerate_knows(cls, names: list[str]) -> list[str]:
            if not names:  # no Accelerate (and torch) import when off: the CLI builds these settings too
                return names
            import accelerate
            from accelerate.tracking import LOGGER_TYPE_TO_CLASS

            unknown = [name for name in names if name not in LOGGER_TYPE_TO_CLASS]
            if unknown:
                raise ValueError(f"unknown tracker {', '.join(map(repr, unknown))}: Accelerate {accelerate.__version__}"
                                 f" knows {', '.join(sorted(LOGGER_TYPE_TO_CLASS))}")
            return names

        @model_validator(mode="before")
        @classmethod
        def _grad_accum_from_global_batch(cls, data):
            if isinstance(data, dict) and data.get("global_batch"):
                fields = cls.model_fields
                per_step = (data.get("batch_size", fields["batch_size"].default)
                            * data.get("num_processes", fields["num_processes"].default))
                if data["global_batch"] % per_step:
                    raise ValueError(f"global_batch {data['global_batch']} is not a multiple of batch_size x "
                                     f"num_processes = {per_step}")
                data = {**data, "grad_accum": data["global_batch"] // per_step}
            return data

        @model_validator(mode="after")
        def _every_kept_example_fits_a_pack(self):
            if self.packing and self.pack_length is not None and self.pack_length < self.max_length:
                raise ValueError(f"pack_length {self.pack_length} is shorter than max_length {self.max_length}: "
                                 "a kept example might not fit any pack")
            return self

        @model_validator(mode="after")
        def _fused_ce_is_part_of_liger(self):
            if self.liger_fused_ce and self.liger is False:  # it would silently do nothing
                raise ValueError("liger_fused_ce is one of Liger's kernels: set liger to true (or auto) as well")
            return self

        @model_validator(mode="after")
        def _cuda_graphs_need_one_shape(self):
            if self.compile and self.compile_mode in CUDA_GRAPH_MODES and (self.grad_accum > 1 or not self.packing):
                # cudagraph trees hand a replay's outputs, the gradients, to the parameters and the next replay
                # writes over them: accumulated over micro-batches they come out wrong (pytorch/pytorch#96693)
                raise ValueError(f"compile_mode {self.compile_mode} replays CUDA graphs: it needs packing (one batch"
                                 f" shape) and grad_accum 1, got packing={self.packing}, grad_accum={self.grad_accum}"
                                 "; raise batch_size instead, or use compile_mode default")
            return self

    execution = ("report_to", "logging_dir")

    def check(self) -> None:
        """A tracker whose package is missing, before any work: Accelerate would drop it with a debug line."""
        problem = missing_trackers(self.settings.report_to)
        if problem:
            raise ValueError(problem)

    def train(self, examples: pa.Table, student: str, ctx: Context) -> dict:
        if self.settings.num_processes > 1 or self.settings.accelerate_config:
            return launch_processes(examples, student, ctx, self.settings)
        return train(examples, student, ctx, self.settings)


# ---------------------------------------------------------------------------------------------------
# Data: chat rendering, assistant-only labels, batches.


def assistant_turn(thinking: str, answer: str, mode: str) -> str:
    """The project-wide rendering of a System-2 (reasoning) or System-1 (answer only) response."""
    if mode == "system2":
        return f"<think>\n{thinking}\n</think>\n{answer}"
    if mode == "system1":
        return answer
    raise ValueError(f"example mode must be 'system2' or 'system1', got {mode!r}")


def stop_token_ids(tokenizer, student: str) -> set[int]:
    """Tokens that end generation: the tokenizer's EOS plus the generation config's (e.g. <|eot_id|>)."""
    from transformers import GenerationConfig

    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    try:
        eos = GenerationConfig.from_pretrained(student).eos_token_id
    except OSError:  # no generation_config.json
        eos = None
    ids |= set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    return ids


def encode_example(tokenizer, question: str, response: str, system_prompt: str | None, stops: set[int]) -> dict:
    """Token ids and labels; the prompt (everything up to the assistant's first token) is masked.

    Prompt and response are tokenized separately and concatenated: that is exactly what the student sees
    at inference, where the prompt is tokenized alone and the response is generated after it.
    """
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": question}
    ]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": response}], tokenize=False)
    if not full.startswith(prompt):
        raise ValueError(
            "the chat template's rendering with add_generation_prompt=True is not a prefix of the rendering "
            "with the assistant turn, so the assistant span cannot be found; prompt ends "
            f"{prompt[-80:]!r}, full rendering has {full[len(prompt) - 80:len(prompt) + 20]!r} there"
        )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
    if stops and not stops.intersection(response_ids):  # a template that does not close the turn with EOS
        response_ids = response_ids + [tokenizer.eos_token_id]
    return {"input_ids": prompt_ids + response_ids, "labels": [IGNORE] * len(prompt_ids) + response_ids}


def encode_examples(tokenizer, examples: pa.Table, settings, stops: set[int]) -> tuple[list[dict], int]:
    """Encode every example; return those within ``max_length`` and how many were dropped."""
    kept, dropped = [], 0
    for row in examples.select(["question", "thinking", "answer", "mode"]).to_pylist():
        response = assistant_turn(row["thinking"] or "", row["answer"] or "", row["mode"])
        enc = encode_example(tokenizer, row["question"], response, settings.system_prompt, stops)
        if len(enc["input_ids"]) > settings.max_length:
            dropped += 1
        else:
            kept.append(enc)
    return kept, dropped


def build_loader(encoded: list[dict], settings, pad_id: int, attn: str):
    """Padded batches of examples, or (``packing``) batches of packed sequences; returns (loader, packs).

    The flash kernels take the packs of a batch as one row; ``varlen`` takes even unpacked examples as one
    row of sequences (padding-free), and its batches carry the sequence boundaries.
    """
    one_row = varlen = attn.startswith("flash") or attn == "varlen"
    if not settings.packing and attn == "varlen":
        collate = lambda features: pack_batch([[f] for f in features], pad_id, True, True)  # noqa: E731
        items, packs = encoded, None
    elif not settings.packing:
        collate = lambda features: pad_batch(features, pad_id)  # noqa: E731
        items, packs = encoded, None
    else:
        capacity = settings.pack_length or settings.max_length
        packs = pack_examples([len(f["input_ids"]) for f in encoded], capacity)
        items = [[encoded[i] for i in pack] for pack in packs]
        layout = Layout.of(packs, settings.batch_size, capacity) if settings.compile else None
        collate = lambda packed: pack_batch(packed, pad_id, one_row, varlen, layout)  # noqa: E731
    loader = torch.utils.data.DataLoader(items, batch_size=settings.batch_size, collate_fn=collate,
                                         sampler=EpochShuffle(len(items), settings.seed),
                                         pin_memory=torch.cuda.is_available())  # async copies to the GPU
    return loader, packs


# ---------------------------------------------------------------------------------------------------
# Model.


def attention_backend(requested: str) -> str:
    """A variable-length flash kernel on a GPU (the flash-attn package's, else PyTorch's own), else sdpa.

    sdpa and eager get a block-diagonal mask for packed rows, which keeps sdpa off its flash kernel (a
    masked kernel computes every pair of the row); the flash kernels take the packed examples as one row of
    variable-length sequences and compute only each example's own causal triangle.
    """
    from nt_sft.steps import register_varlen_attention, varlen_available

    if requested == "varlen":
        if not varlen_available():
            from nt_sft import steps

            why = steps.varlen_error or "no such GPU here"
            raise ValueError("attn_implementation varlen needs a CUDA GPU (compute capability 8.0+) and a torch "
                             f"with torch.nn.attention.varlen (2.10+) whose kernel runs here ({why})")
        return register_varlen_attention()
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        import importlib.util

        if importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
        if varlen_available():
            return register_varlen_attention()
    return "sdpa"


def use_liger(setting, student: str) -> bool:
    """Resolve the ``liger`` setting: auto means on wherever it can be; true where it cannot is an error."""
    from transformers import AutoConfig

    from nt_sft.steps import liger_supported

    if setting is False:
        return False
    why_not = liger_supported(AutoConfig.from_pretrained(student).model_type)
    if why_not and setting is True:
        raise ValueError(f"liger is true but {why_not}")
    return why_not is None


def load_student(student: str, settings, attn_implementation: str = "sdpa", liger: bool = False):
    """fp32 master weights (pure bf16 weights lose AdamW updates at lr 2e-5); Liger's kernels and LoRA
    adapters on top if asked."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(student, dtype=torch.float32, attn_implementation=attn_implementation)
    model.config.use_cache = False
    if liger:
        from nt_sft.steps import apply_liger

        apply_liger(model, settings.liger_fused_ce)
    if settings.compile:  # the layers are compiled by Accelerate's prepare, the loss here
        from nt_sft.steps import compile_loss

        compile_loss(model, settings.compile_mode, static_shapes=settings.packing)
    if settings.gradient_checkpointing:  # newer transformers renamed gradient_checkpointing_enable
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if settings.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=settings.lora_r,
                lora_alpha=settings.lora_alpha,
                lora_dropout=settings.lora_dropout,
                target_modules=settings.lora_targets,
                task_type="CAUSAL_LM",
            ),
        )
    return model


class TrainProgress:
    """What the loop has done, with one metrics row per optimizer step; saved with every checkpoint (in
    ``ctx.scratch``) so a resumed run reports, and writes ``metrics.parquet`` for, the whole run, each step once:
    the steps a killed attempt ran after its last checkpoint are not in the state it resumes from."""

    def __init__(self):
        self.step, self.train_tokens, self.losses, self.metrics = 0, 0, [], []

    def record(self, step: dict, seconds: float, steps_per_epoch: int) -> dict:
        """Count one optimizer step (``optimizer_step``'s result, ``seconds`` long); returns its metrics row."""
        self.step += 1
        self.train_tokens += step["targets"]
        self.losses.append(step["loss"])
        row = {"step": self.step, "epoch": self.step / steps_per_epoch, "loss": step["loss"], "lr": step["lr"],
               "grad_norm": step["grad_norm"], "tokens": step["real_tokens"], "target_tokens": step["targets"],
               "tokens_per_s": step["real_tokens"] / seconds if seconds > 0 else None}
        self.metrics.append(row)
        return row

    def state_dict(self) -> dict:
        return {"step": self.step, "train_tokens": self.train_tokens, "losses": list(self.losses),
                "metrics": [dict(row) for row in self.metrics]}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.train_tokens, self.losses = state["step"], state["train_tokens"], list(state["losses"])
        # a checkpoint written before metrics were kept: its steps keep their loss, the other columns are null
        rows = state.get("metrics", [{"step": i + 1, "loss": loss} for i, loss in enumerate(self.losses)])
        self.metrics = [dict(row) for row in rows]


def write_metrics(rows: list[dict], path: Path) -> None:
    """``metrics.parquet``: one row per optimizer step, typed even where a column is all null."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("step", pa.int64()), ("epoch", pa.float64()), ("loss", pa.float64()), ("lr", pa.float64()),
                        ("grad_norm", pa.float64()), ("tokens", pa.int64()), ("target_tokens", pa.int64()),
                        ("tokens_per_s", pa.float64())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


# ---------------------------------------------------------------------------------------------------
# Trackers (report_to).

TRACKER_PROJECT = "nt-harness"  # TensorBoard's run folder, wandb's and trackio's project, MLflow's experiment
TRACKER_PACKAGES = {"comet_ml": "comet-ml"}  # pip's name where it is not the tracker's


def missing_trackers(names: list[str]) -> str | None:
    """Which trackers cannot start here and what to install (None: all can). A tracker registered with
    Accelerate by hand has no availability check: it is taken to be there."""
    if not names:
        return None
    import accelerate.utils

    missing = [name for name in names if not getattr(accelerate.utils, f"is_{name}_available", lambda: True)()]
    if not missing:
        return None
    return (f"report_to: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed here: "
            f"pip install {' '.join(TRACKER_PACKAGES.get(name, name) for name in missing)}")


def tracker_config(settings, student: str) -> dict:
    """The settings as scalars: TensorBoard's hparams refuse a list (``lora_targets``, ``report_to``)."""
    plain = {**settings.model_dump(mode="json"), "student": student}
    return {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in plain.items()}


def start_trackers(accelerator, settings, student: str, restored: list[dict]) -> None:
    """Open the trackers (main process only, as Accelerate does) and send the rows a resumed run restored from its
    checkpoint, so that the new run's curves start at step 1 like metrics.parquet."""
    accelerator.init_trackers(TRACKER_PROJECT, config=tracker_config(settings, student))
    for row in restored:
        log_row(accelerator, row)


def log_row(accelerator, row: dict) -> None:
    accelerator.log({k: v for k, v in row.items() if k != "step" and v is not None}, step=row["step"])


# ---------------------------------------------------------------------------------------------------
# The loop.


@dataclass
class Run:
    """Everything ``setup`` prepared, so the loop, the save and the stats take one argument, not fourteen."""

    accelerator: Any
    model: Any
    optimizer: Any
    schedule: Any
    loader: Any
    tokenizer: Any
    examples: int  # kept (within max_length)
    dropped: int
    packs: list | None
    attn: str
    liger: bool
    save_dtype: torch.dtype
    steps_per_epoch: int
    total_steps: int


def train(examples: pa.Table, student: str, ctx: Context, settings) -> dict:
    """Train in this process (and its peers, when started by ``accelerate launch``)."""
    run = setup(examples, student, ctx, settings)
    done = resume(run, Path(ctx.scratch) / "checkpoint")
    resumed_from = done.step
    if settings.report_to:
        start_trackers(run.accelerator, settings, student, done.metrics)
    speed = step_loop(run, done, ctx, settings, student)
    save_model(run.accelerator, run.model, run.tokenizer, settings.lora, run.save_dtype, student, Path(ctx.out))
    if run.accelerator.is_main_process:
        write_metrics(done.metrics, Path(ctx.out) / "metrics.parquet")
    if settings.report_to:
        run.accelerator.end_training()  # last: it also ends the process group that save_model gathers over
    return run_stats(run, done, resumed_from, speed)


def start_accelerator(ctx: Context, settings):
    """The Accelerator, refusing or warning about the distributed setups this loop cannot honour."""
    from accelerate.utils import DistributedType, set_seed

    torch.set_num_threads(ctx.threads)
    # packed batches differ in length every step: growable segments keep the CUDA caching allocator from
    # fragmenting (PyTorch's CUDA memory-management notes); read when CUDA is first used in the process
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    set_seed(settings.seed)
    problem = missing_trackers(settings.report_to)  # nt_sft.launch by hand skips the pipeline's check
    if problem:
        raise ValueError(problem)
    accelerator = make_accelerator(settings.mixed_precision, settings.compile_mode if settings.compile else None,
                                   static_shapes=settings.packing, log_with=settings.report_to,
                                   project_dir=settings.logging_dir or str(Path(ctx.out) / "trackers"))
    if accelerator.distributed_type == DistributedType.DEEPSPEED and settings.grad_accum > 1:
        # DeepSpeed steps its optimizer inside every backward; this loop's window would step it each micro-batch
        raise ValueError("with DeepSpeed use grad_accum 1 (raise batch_size or processes instead)")
    if accelerator.distributed_type not in (DistributedType.FSDP, DistributedType.DEEPSPEED) and any(
            os.environ.get(f"ACCELERATE_USE_{k}", "").lower() == "true" for k in ("FSDP", "DEEPSPEED")):
        # Accelerate (1.15, state.py) enables FSDP only from a GPU-type state and DeepSpeed only off `cpu`: CPU
        # processes (ACCELERATE_USE_CPU, which launch_processes sets without CUDA) silently run plain DDP
        log.warning("sft: an FSDP/DeepSpeed accelerate config without GPUs runs as %s: nothing is sharded",
                    accelerator.distributed_type.value)
    return accelerator


def setup(examples: pa.Table, student: str, ctx: Context, settings) -> Run:
    """Encode, batch, load and ``prepare`` everything before the first step, so a bad input fails in seconds."""
    from accelerate.utils import DistributedType
    from transformers import AutoConfig, AutoTokenizer

    accelerator = start_accelerator(ctx, settings)
    tokenizer = AutoTokenizer.from_pretrained(student)
    if not tokenizer.chat_template:
        raise ValueError(f"student {student} has no chat template; the trainer renders examples with it")
    encoded, dropped = encode_examples(tokenizer, examples, settings, stop_token_ids(tokenizer, student))
    if not encoded:
        raise ValueError(f"all {examples.num_rows} examples are longer than max_length={settings.max_length}")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    attn = attention_backend(settings.attn_implementation)
    liger = use_liger(settings.liger, student)
    loader, packs = build_loader(encoded, settings, pad_id, attn)

    save_dtype = AutoConfig.from_pretrained(student).dtype or torch.float32  # the student's own dtype
    save_dtype = getattr(torch, save_dtype) if isinstance(save_dtype, str) else save_dtype
    model = load_student(student, settings, attn, liger)
    # each process takes every num_processes-th batch, the last ones topped up (Accelerate's even_batches)
    steps_per_epoch = math.ceil(math.ceil(len(loader) / accelerator.num_processes) / settings.grad_accum)
    total_steps = steps_per_epoch * settings.epochs
    # fused: one kernel over all parameters, 5x the foreach step on a CPU (0.09 against 0.42 s for 135M); CPU runs
    # of several processes keep foreach, where fused has not been tried with FSDP's and DeepSpeed's CPU paths
    optimizer = build_optimizer(model, settings, fused=accelerator.device.type == "cuda" or (
        accelerator.device.type == "cpu" and accelerator.distributed_type == DistributedType.NO))
    schedule = build_schedule(optimizer, settings, total_steps)
    fsdp_precision(accelerator)
    # all four in one call: DeepSpeed sizes its micro-batch from the loader, FSDP needs model and optimizer together
    model, optimizer, loader, schedule = accelerator.prepare(model, optimizer, loader, schedule)
    skip_output_upcast(accelerator, model)
    assert math.ceil(len(loader) / settings.grad_accum) == steps_per_epoch, (len(loader), steps_per_epoch)
    model.train()
    return Run(accelerator, model, optimizer, schedule, loader, tokenizer, len(encoded), dropped, packs, attn, liger,
               save_dtype, steps_per_epoch, total_steps)


def resume(run: Run, checkpoint: Path) -> TrainProgress:
    """The progress of an earlier, killed attempt (and the state it saved), or a fresh start."""
    done = TrainProgress()
    run.accelerator.register_for_checkpointing(done)
    if checkpoint.exists():
        run.accelerator.load_state(str(checkpoint))
    return done


@dataclass
class Speed:
    """This attempt's token counts and step time (a resumed run counts only its own steps)."""

    real_tokens: int = 0
    computed_tokens: int = 0
    train_seconds: float = 0.0

    def add(self, step: dict, seconds: float) -> None:
        self.real_tokens += step["real_tokens"]
        self.computed_tokens += step["computed_tokens"]
        self.train_seconds += seconds


def step_loop(run: Run, done: TrainProgress, ctx: Context, settings, student: str) -> Speed:
    """The optimizer steps left, from ``done.step`` on: each epoch reshuffled, a resumed one skipping its batches."""
    from nt_harness.progress import Progress

    accelerator, checkpoint, speed = run.accelerator, Path(ctx.scratch) / "checkpoint", Speed()
    progress = (ctx.progress if accelerator.is_main_process else None) or Progress(disable=True)
    with progress.task(f"sft {Path(student).name}", total=run.total_steps) as advance:
        advance(done.step)
        for epoch in range(done.step // run.steps_per_epoch, settings.epochs):
            run.loader.set_epoch(epoch)  # before skipping: the skipping loader shares this sampler
            skip = (done.step - epoch * run.steps_per_epoch) * settings.grad_accum
            batches = iter(accelerator.skip_first_batches(run.loader, skip) if skip else run.loader)
            for _ in range(done.step - epoch * run.steps_per_epoch, run.steps_per_epoch):
                window = [b for _, b in zip(range(settings.grad_accum), batches)]
                started = time.perf_counter()
                step = optimizer_step(accelerator, run.model, run.optimizer, run.schedule, window,
                                      settings.max_grad_norm)
                seconds = time.perf_counter() - started
                speed.add(step, seconds)
                log_row(accelerator, done.record(step, seconds, run.steps_per_epoch))  # no trackers: no-op
                if settings.save_every_steps and done.step % settings.save_every_steps == 0 \
                        and done.step < run.total_steps:
                    save_checkpoint(accelerator, checkpoint)
                advance(1, info=f"loss {step['loss']:.3f} · {speed.real_tokens / speed.train_seconds:,.0f} tok/s")
    return speed


def run_stats(run: Run, done: TrainProgress, resumed_from: int, speed: Speed) -> dict:
    """The stage's stats for the manifest and the leaderboard (cost, provenance, what actually ran)."""
    accelerator, tokenizer = run.accelerator, run.tokenizer
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else str(tokenizer.chat_template)
    return {
        "examples": run.examples,
        "dropped_too_long": run.dropped,
        "packs": len(run.packs) if run.packs is not None else None,
        "train_tokens": done.train_tokens,
        "steps": done.step,
        "resumed_from_step": resumed_from,
        "final_loss": done.losses[-1],
        "loss_curve": done.losses,
        "processes": accelerator.num_processes,
        "distributed": accelerator.distributed_type.value,  # NO, MULTI_CPU, MULTI_GPU (DDP), FSDP, DEEPSPEED
        # for the leaderboard's GPU-hours (wall time x GPUs): one GPU per process on CUDA
        "device": accelerator.device.type,
        "gpus": accelerator.num_processes if accelerator.device.type == "cuda" else 0,
        "attn_implementation": run.attn,
        "liger": run.liger,
        # all non-padding tokens pushed through the model (all processes) per second of optimizer steps
        # (this run, so a resumed run counts only its own steps)
        "tokens_per_s": round(speed.real_tokens / speed.train_seconds, 1) if speed.train_seconds else None,
        # real tokens / tokens computed (padding included): what packing buys
        "packing_efficiency": (round(speed.real_tokens / speed.computed_tokens, 4)
                               if speed.computed_tokens else None),
        "provenance": {"chat_template_sha": hashlib.sha256(template.encode()).hexdigest()},
    }


def launch_processes(examples: pa.Table, student: str, ctx: Context, settings) -> dict:
    """Run ``nt_sft.launch`` under ``accelerate launch`` with ``settings.num_processes`` processes.

    The examples and settings go through files in ``ctx.scratch`` (so a killed launch resumes from its
    checkpoint like a single-process run); the statistics come back as JSON. Without a GPU the processes
    are CPU processes talking over gloo (accelerate's ``--multi_gpu`` launcher is torchrun; its ``--cpu``
    flag would start only one process).
    """
    import pyarrow.parquet as pq

    work = Path(ctx.scratch) / "launch"
    work.mkdir(parents=True, exist_ok=True)
    pq.write_table(examples, work / "examples.parquet")
    (work / "settings.json").write_text(settings.model_dump_json())
    stats_file = work / "stats.json"
    stats_file.unlink(missing_ok=True)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(settings.num_processes),
               "--num_machines", "1", "--main_process_port", str(free_port())]
    if settings.accelerate_config:
        command += ["--config_file", settings.accelerate_config]
    else:
        command += ["--multi_gpu"]
    command += ["-m", "nt_sft.launch", "--examples", str(work / "examples.parquet"), "--student", student,
                "--out", str(ctx.out), "--scratch", str(ctx.scratch), "--threads", str(ctx.threads),
                "--settings", str(work / "settings.json"), "--stats", str(stats_file)]
    env = {**os.environ, "OMP_NUM_THREADS": str(ctx.threads)}
    if not torch.cuda.is_available():
        env["ACCELERATE_USE_CPU"] = "1"  # gloo, CPU tensors
    finished = subprocess.run(command, env=env, capture_output=True, text=True)
    if finished.returncode != 0:
        raise RuntimeError(f"accelerate launch failed ({finished.returncode}): {' '.join(command)}\n"
                           f"{finished.stderr[-4000:]}")
    return json.loads(stats_file.read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save_checkpoint(accelerator, checkpoint: Path) -> None:
    """Write the state beside the old one and swap, so a kill mid-write leaves the previous state whole."""
    import shutil

    tmp = checkpoint.with_name(checkpoint.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(checkpoint, ignore_errors=True)
        tmp.rename(checkpoint)
    accelerator.wait_for_everyone()


def save_model(accelerator, model, tokenizer, lora: bool, dtype, student: str, out: Path) -> None:
    """``out/model``: a plain Hugging Face folder (safetensors, config, tokenizer with chat template) in
    the student's own dtype; with LoRA also ``out/adapter``, and ``model`` holds the merged weights.

    Under FSDP or DeepSpeed ZeRO-3 each process holds a shard: the full state dict is gathered first (every
    process takes part), and a LoRA merge starts from the student's weights read again from disk.
    """
    from accelerate.utils import DistributedType

    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    state = accelerator.get_state_dict(model) if sharded else None
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    model = accelerator.unwrap_model(model, keep_fp32_wrapper=False, keep_torch_compile=False)  # compile: _orig_mod
    if lora:
        model.save_pretrained(out / "adapter", state_dict=state)
        tokenizer.save_pretrained(out / "adapter")
        if sharded:
            from peft import PeftModel
            from transformers import AutoModelForCausalLM

            base = AutoModelForCausalLM.from_pretrained(student, dtype=torch.float32)
            model = PeftModel.from_pretrained(base, out / "adapter")
        model = model.merge_and_unload()
        state = None
    model.config.use_cache = True
    if state is None:
        model.to(dtype).save_pretrained(out / "model")
    else:  # the gather copies tied weights (lm_head, embed_tokens) apart: share them again, so that save_pretrained
        first = {}  # (which dedups by storage) writes one, as an unsharded save does
        state = {k: v.to(dtype) for k, v in state.items()}
        for name, param in model.named_parameters(remove_duplicate=False):
            if name in state:
                state[name] = state[first.setdefault(id(param), name)]
        model.save_pretrained(out / "model", state_dict=state)
    tokenizer.save_pretrained(out / "model")
