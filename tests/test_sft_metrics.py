"""The `sft` trainer's training metrics where people look: ``metrics.parquet`` in the stage output (one row per
optimizer step, whole across a resume) and Accelerate's trackers (``report_to``), on the tiny random Llama."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from nt_sft.trainer import SFTTrainer, build_schedule
from test_sft import Interrupted, StopAfter, context, make_examples

COLUMNS = ["step", "epoch", "loss", "lr", "grad_norm", "tokens", "target_tokens", "tokens_per_s"]


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def metrics(out) -> dict[str, list]:
    return pq.read_table(out / "metrics.parquet").to_pydict()


def scheduled_lrs(settings, total_steps: int) -> list[float]:
    """The lr of each update as the schedule gives it, on a stand-in optimizer."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=settings.lr)
    schedule, lrs = build_schedule(optimizer, settings, total_steps), []
    for _ in range(total_steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return lrs


def test_a_run_writes_one_metrics_row_per_step(tiny_llama, tmp_path):
    """Every column for every step: the loss the stats report, the schedule's lr (warmup, then cosine), the norm
    before clipping (above a clipping bound it was clipped to), the real tokens of the step and their speed."""
    trainer = SFTTrainer(epochs=3, batch_size=2, lr=1e-3, schedule="cosine", warmup_ratio=0.25, max_grad_norm=0.01)
    ctx = context(tmp_path)
    stats = trainer.train(make_examples(8), tiny_llama, ctx)
    rows = metrics(ctx.out)

    assert list(rows) == COLUMNS
    assert rows["step"] == list(range(1, stats["steps"] + 1)) and stats["steps"] == 12  # 4 steps an epoch
    assert rows["epoch"] == pytest.approx([s / 4 for s in rows["step"]])
    assert rows["loss"] == stats["loss_curve"] and all(math.isfinite(x) for x in rows["loss"])
    assert rows["lr"] == pytest.approx(scheduled_lrs(trainer.settings, 12), abs=1e-12)
    assert rows["lr"][0] == 0.0 and max(rows["lr"]) == pytest.approx(1e-3)  # warmup from 0, then the peak
    assert all(norm > 0.01 for norm in rows["grad_norm"])  # measured before clipping to 0.01
    assert all(t > 0 for t in rows["tokens"]) and all(t > 0 for t in rows["tokens_per_s"])
    assert sum(rows["target_tokens"]) == stats["train_tokens"]
    assert all(0 < t < r for t, r in zip(rows["target_tokens"], rows["tokens"]))  # the prompts are not targets


def test_without_clipping_the_norm_is_still_measured(tiny_llama, tmp_path):
    """max_grad_norm 0 clips nothing (the same updates as a bound no gradient reaches) and records the norm."""
    settings = dict(epochs=1, batch_size=4, lr=1e-3, mixed_precision="no")
    off = SFTTrainer(max_grad_norm=0, **settings).train(make_examples(8), tiny_llama, context(tmp_path / "off"))
    huge = SFTTrainer(max_grad_norm=1e9, **settings).train(make_examples(8), tiny_llama, context(tmp_path / "huge"))
    a, b = metrics(tmp_path / "off" / "out"), metrics(tmp_path / "huge" / "out")
    assert off["loss_curve"] == huge["loss_curve"]
    assert a["grad_norm"] == b["grad_norm"] and all(norm > 0 for norm in a["grad_norm"])


def test_a_killed_and_resumed_run_has_every_step_once(tiny_llama, tmp_path):
    """Killed after step 5 (last checkpoint: step 3) and resumed: steps 1..8 once each, steps 4 and 5 from the
    resumed attempt, and the numbers of a run never interrupted (which had no tracker: report_to changes none).
    The resumed attempt's TensorBoard run has every step once too: it is sent the checkpoint's rows first."""
    settings = dict(epochs=2, batch_size=2, lr=1e-3, save_every_steps=3)  # 4 steps an epoch, 8 in all
    whole = SFTTrainer(**settings).train(make_examples(8), tiny_llama, context(tmp_path / "whole"))
    watched = dict(settings, report_to=["tensorboard"])
    with pytest.raises(Interrupted):
        SFTTrainer(**watched).train(make_examples(8), tiny_llama, context(tmp_path / "killed", StopAfter(5)))
    assert not (tmp_path / "killed" / "out" / "metrics.parquet").exists()
    shutil.rmtree(tmp_path / "killed" / "out")  # as the store does: each attempt writes a fresh output folder
    resumed = SFTTrainer(**watched).train(make_examples(8), tiny_llama, context(tmp_path / "killed"))

    assert resumed["resumed_from_step"] == 3
    rows, reference = metrics(tmp_path / "killed" / "out"), metrics(tmp_path / "whole" / "out")
    assert rows["step"] == list(range(1, 9)) == reference["step"]
    assert reference["loss"] == whole["loss_curve"]
    assert rows["loss"] == pytest.approx(reference["loss"], rel=1e-5)
    for column in ("epoch", "lr", "tokens", "target_tokens"):
        assert rows[column] == reference[column], column
    assert rows["grad_norm"] == pytest.approx(reference["grad_norm"], rel=1e-4)
    assert scalars(tmp_path / "killed" / "out" / "trackers" / "nt-harness", "loss") == as_logged(rows)


def scalars(folder, tag: str) -> list[tuple[int, float]]:
    """(step, value) of every event of ``tag`` in TensorBoard's files in ``folder``, as TensorBoard reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def as_logged(rows: dict, column: str = "loss") -> list[tuple[int, float]]:
    """metrics.parquet's column as a TensorBoard scalar holds it: a float32."""
    return [(step, float(np.float32(x))) for step, x in zip(rows["step"], rows[column])]


def test_tensorboard_gets_every_steps_metrics(tiny_llama, tmp_path):
    """report_to tensorboard through Accelerate: event files in the stage output's trackers/ folder whose loss (and
    lr, grad_norm, tokens) at each step are metrics.parquet's, and the settings stored as the run's hyperparameters."""
    import yaml

    ctx = context(tmp_path)
    stats = SFTTrainer(epochs=2, batch_size=4, lr=1e-3, report_to=["tensorboard"]).train(make_examples(8), tiny_llama,
                                                                                           ctx)
    rows, folder = metrics(ctx.out), ctx.out / "trackers" / "nt-harness"
    assert rows["step"] == [1, 2, 3, 4] == list(range(1, stats["steps"] + 1))
    for column in ("loss", "lr", "grad_norm", "tokens", "tokens_per_s"):
        assert scalars(folder, column) == as_logged(rows, column), column
    (hparams,) = folder.glob("*/hparams.yml")
    stored = yaml.safe_load(hparams.read_text())
    assert stored["lr"] == 1e-3 and stored["student"] == tiny_llama and stored["report_to"] == '["tensorboard"]'


def test_a_logging_dir_takes_the_events_elsewhere(tiny_llama, tmp_path):
    ctx = context(tmp_path)
    SFTTrainer(epochs=1, batch_size=8, report_to=["tensorboard"], logging_dir=str(tmp_path / "tb")).train(
        make_examples(8), tiny_llama, ctx)
    assert [step for step, _ in scalars(tmp_path / "tb" / "nt-harness", "loss")] == [1]
    assert not (ctx.out / "trackers").exists()


def test_where_a_run_is_watched_is_not_part_of_its_cache_key():
    assert {"report_to", "logging_dir"} <= set(SFTTrainer.execution)
    watched = SFTTrainer(report_to=["tensorboard"], logging_dir="/somewhere/else")
    assert watched.key_settings() == SFTTrainer().key_settings()
    assert SFTTrainer(lr=1e-4).key_settings() != SFTTrainer().key_settings()  # the key still sees the rest


def test_an_unknown_tracker_is_refused_by_name():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"unknown tracker 'tensorbord': Accelerate .* knows .*tensorboard"):
        SFTTrainer(report_to=["tensorboard", "tensorbord"])
    with pytest.raises(ValidationError, match="unknown tracker 'all'"):  # every installed one: a run would depend on it
        SFTTrainer(report_to=["all"])


def test_a_tracker_that_is_not_installed_names_its_package(tiny_llama, tmp_path):
    """Refused by the pipeline's check, before any work, and by the trainer itself (nt_sft.launch by hand), before
    the student is loaded: Accelerate alone would drop the tracker with a debug line and train unwatched."""
    import accelerate.utils

    absent = [name for name in ("aim", "swanlab", "dvclive", "clearml", "comet_ml", "mlflow")
              if not getattr(accelerate.utils, f"is_{name}_available")()]
    if not absent:
        pytest.skip("every tracker this test could use is installed")
    name, package = absent[0], {"comet_ml": "comet-ml"}.get(absent[0], absent[0])
    trainer = SFTTrainer(report_to=["tensorboard", name])
    with pytest.raises(ValueError, match=f"report_to: {name} is not installed here: pip install {package}$"):
        trainer.check()
    SFTTrainer(report_to=["tensorboard"]).check()
    with pytest.raises(ValueError, match=f"pip install {package}"):
        trainer.train(make_examples(8), tiny_llama, context(tmp_path))
    assert not list((tmp_path / "out").iterdir())
