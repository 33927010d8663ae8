"""The training loop: the IC-STN protocol on GTSRB, single process or torchrun/DDP.

Each batch gets fresh perturbation warps (``geometry.perturbation_warps``) and the model sees
``model(image, init_warp)``; validation images are held out by physical sign track. Rank 0 writes, under
``run.out``: ``config.json`` (the resolved config), ``metrics.jsonl`` (one JSON object per epoch, plus a final
``test`` record), ``checkpoint.pt`` (every epoch, for ``--resume``), ``model.pt`` (the final model),
``val.json`` and ``eval.json`` (the final validation and test evaluations) and ``plots/*.png``.

This module sets a run up and drives it; the parts live by job: :mod:`training.inputs` (the data a run sees),
:mod:`training.optim` (optimizer, schedule, EMA), :mod:`training.step` (one step, one epoch),
:mod:`training.state` (resume and fine-tuning), :mod:`training.reporting` (progress line, epoch records) and
:mod:`training.finish` (val.json, eval.json, plots). The names they define that callers used to import from
here are re-exported.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from training import augment, distributed
from training.config import TrainConfig
from training.errors import ConfigError
from training.evaluate import EvalResult
from training.finish import (
    evaluate_test_set,
    finish,
    plots_from_checkpoint,
    rotated_test_study,
    write_plots,
    write_rotation_plot,
    write_validation,
)
from training.inputs import alignment_boxes, load_test_data, load_training_data, split_train_val, val_seed
from training.models import TransformerClassifier, build_model, count_parameters, save_checkpoint
from training.optim import averaged, build_ema, build_optimizer, build_scheduler
from training.reporting import (
    Progress,
    epoch_record,
    format_duration,
    format_record,
    log,
    validation_figures,
    write_metrics,
)
from training.state import init_weights, lineage_entry, resume, train_state
from training.step import MAX_BAD_STEPS, LoopState, Segment, Trainer, run_epoch

__all__ = [
    "MAX_BAD_STEPS",
    "Progress",
    "TrainResult",
    "averaged",
    "build_ema",
    "build_optimizer",
    "build_scheduler",
    "evaluate_test_set",
    "init_weights",
    "load_test_data",
    "load_training_data",
    "main_entry",
    "photometric_spec",
    "plots_from_checkpoint",
    "resolve_device",
    "rotated_test_study",
    "split_train_val",
    "train",
    "write_plots",
    "write_rotation_plot",
    "write_validation",
]

# The names these had before the split (kept for callers).
_alignment_boxes = alignment_boxes
_val_seed = val_seed


@dataclass
class TrainResult:
    """What a finished run produced.

    Attributes:
        out_dir: the output folder.
        model_path: the final checkpoint (``model.pt``).
        history: one dict per epoch (the metrics.jsonl records).
        steps: optimizer steps taken in total.
        wall_time_s: training time in seconds (over all resumed segments).
        eval: the final test evaluation, when run.
        model: the trained model (unwrapped from DDP), in train mode.
    """

    out_dir: Path
    model_path: Path
    history: list[dict[str, Any]]
    steps: int
    wall_time_s: float
    eval: EvalResult | None = None
    model: TransformerClassifier | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without CUDA raises ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device = 'cuda' but no CUDA device is available")
    return torch.device(name)


def photometric_spec(config: TrainConfig) -> augment.PhotometricSpec:
    """The photometric augmentation the data config asks for (all off by default)."""
    data = config.data
    return augment.PhotometricSpec(
        color_jitter=data.color_jitter,
        blur_prob=data.blur_prob,
        blur_max_sigma=data.blur_max_sigma,
        noise_std=data.noise_std,
        exposure_jitter=data.exposure_jitter,
        saturation_jitter=data.saturation_jitter,
        shadow_prob=data.shadow_prob,
        shadow_min_gain=data.shadow_min_gain,
    )


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def _autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    if device.type != "cuda" or not amp:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def train(config: TrainConfig, *, progress_stream: TextIO | None = None) -> TrainResult:
    """Run the IC-STN training protocol described by ``config`` (see the module docstring for the outputs).

    Raises:
        TrainingError subclasses for bad data, config or checkpoints (the CLI prints them as one line).
    """
    start_wall = time.perf_counter()
    device = resolve_device(config.run.device)
    ctx = distributed.setup(device.type)
    try:
        return _train(config, device, ctx, start_wall, progress_stream)
    finally:
        distributed.cleanup(ctx)


@dataclass
class _Run:
    """A run set up by :func:`_setup`: the trainer, the loop state and the facts the loop and the end use."""

    trainer: Trainer
    state: LoopState
    split: Any
    train_idx: np.ndarray
    val_idx: np.ndarray
    start_epoch: int
    steps_per_epoch: int
    total_steps: int
    lineage: dict[str, Any] | None


def _setup(config: TrainConfig, device: torch.device, ctx: distributed.DistContext) -> _Run:
    """Data, model, optimizer, schedule, generators, EMA and resume, in the protocol's order (the order
    fixes which random numbers each part gets)."""
    _seed_everything(config.run.seed + ctx.rank)
    split = load_training_data(config)
    train_idx, val_idx = split_train_val(split, config)
    images = torch.from_numpy(split.images).permute(0, 3, 1, 2).contiguous()  # (N, 3, 50, 50) uint8
    labels = torch.from_numpy(split.labels)
    align_weight = config.optim.align_weight if config.model.has_transformer else 0.0
    roi50 = alignment_boxes(split, config) if align_weight > 0 else None
    if device.type == "cuda":
        images, labels = images.to(device), labels.to(device)

    model = build_model(config.model)
    lineage: dict[str, Any] | None = None  # what a fine-tuning run started from (kept across resumes)
    if config.run.init_from:
        lineage = init_weights(model, config.run.init_from, config)
        log(f"starting from the weights of {config.run.init_from}", ctx)
    model = model.to(device)
    optimizer = build_optimizer(model, config)
    per_rank = len(train_idx) // ctx.world_size
    steps_per_epoch = max(1, per_rank // config.optim.batch_size)
    total_steps = steps_per_epoch * config.optim.epochs
    if config.run.max_steps is not None:
        total_steps = min(total_steps, config.run.max_steps)
    scheduler = build_scheduler(optimizer, config, total_steps, steps_per_epoch)
    pert_gen = torch.Generator().manual_seed(config.run.seed * 7919 + 17 + ctx.rank)
    aug_gen = torch.Generator().manual_seed(config.run.seed * 104729 + 31 + ctx.rank)
    photometric = photometric_spec(config)
    ema = build_ema(model, config.optim.ema_decay)

    state = LoopState()
    start_epoch = 0
    if config.run.resume:
        start_epoch, state.step, state.history, state.prior_wall, lineage = resume(
            config.run.resume, model, optimizer, scheduler, (pert_gen, aug_gen), config, ema
        )
        log(f"resumed from {config.run.resume} at epoch {start_epoch}, step {state.step}", ctx)

    ddp_model = distributed.wrap_model(model, ctx, device)
    amp_dtype = _autocast_dtype(device, config.run.amp)
    trainer = Trainer(
        config=config,
        device=device,
        ctx=ctx,
        model=model,
        ddp_model=ddp_model,
        optimizer=optimizer,
        scheduler=scheduler,
        ema=ema,
        images=images,
        labels=labels,
        perturbation=pert_gen,
        augmentation=aug_gen,
        photometric=photometric,
        align_weight=align_weight,
        roi50=roi50,
        amp_dtype=amp_dtype,
        scaler=torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None,
    )
    return _Run(trainer, state, split, train_idx, val_idx, start_epoch, steps_per_epoch, total_steps, lineage)


def _train(
    config: TrainConfig,
    device: torch.device,
    ctx: distributed.DistContext,
    start_wall: float,
    progress_stream: TextIO | None,
) -> TrainResult:
    if device.type == "cuda" and ctx.enabled:
        device = torch.device("cuda", ctx.local_rank)
    if config.run.threads is not None:
        torch.set_num_threads(config.run.threads)
    out = Path(config.run.out)
    run = _setup(config, device, ctx)
    trainer, state, split, val_idx = run.trainer, run.state, run.split, run.val_idx
    model = trainer.model

    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(config.to_json() + "\n", encoding="utf-8")
        if not config.run.resume and (out / "metrics.jsonl").exists():
            (out / "metrics.jsonl").unlink()
    log(
        f"training {config.model.model_type}/{config.model.arch} ({config.model.warp_type}, sampler "
        f"{config.model.sampler}, r={config.model.downsampling_rate}, {count_parameters(model):,} params) "
        f"on {device} x{ctx.world_size}: {len(run.train_idx)} train / {len(val_idx)} val images, "
        f"{run.steps_per_epoch} steps/epoch, {run.total_steps} steps",
        ctx,
    )

    progress = Progress(run.total_steps, config.run.log_every, progress_stream, enabled=ctx.is_main)
    segment = Segment(time.perf_counter(), state.step, run.total_steps)
    for epoch in range(run.start_epoch, config.optim.epochs):
        if state.step >= run.total_steps:
            break
        trainer.ddp_model.train()
        epoch_start = time.perf_counter()
        sums = run_epoch(trainer, state, epoch, run.train_idx, run.steps_per_epoch, segment, progress)
        sums = distributed.all_reduce_sum(sums, ctx)
        seconds = time.perf_counter() - epoch_start
        record = epoch_record(epoch, state.step, sums, trainer.optimizer, seconds, ctx)
        if ctx.is_main and len(val_idx):
            record.update(validation_figures(averaged(model, trainer.ema), split, val_idx, config, device))
        record["elapsed_s"] = state.prior_wall + time.perf_counter() - start_wall
        state.history.append(record)
        if ctx.is_main:
            progress.close()
            write_metrics(out, record)
            log(format_record(record), ctx)
            save_checkpoint(
                out / "checkpoint.pt",
                model,
                train_config=config.to_dict(),
                extra=train_state(
                    epoch + 1,
                    state.step,
                    state.history,
                    trainer.optimizer,
                    trainer.scheduler,
                    trainer.generators,
                    record["elapsed_s"],
                    trainer.ema,
                )
                | lineage_entry(run.lineage),
            )
        distributed.barrier(ctx)
    progress.close()

    wall = state.prior_wall + time.perf_counter() - start_wall
    if trainer.ema is not None:  # the saved, evaluated and exported model is the average
        model.load_state_dict(averaged(model, trainer.ema).state_dict())
    model_path = out / "model.pt"
    result = TrainResult(out, model_path, state.history, state.step, wall, model=model)
    if ctx.is_main:
        save_checkpoint(
            model_path,
            model,
            train_config=config.to_dict(),
            extra={
                "epoch": len(state.history),
                "step": state.step,
                "history": state.history,
                "wall_time_s": wall,
                "device": str(device),
                "world_size": ctx.world_size,
                "torch_version": str(torch.__version__),
            }
            | lineage_entry(run.lineage),
        )
        log(f"wrote {model_path} ({format_duration(wall)} wall time)", ctx)
        if config.run.final_eval or config.run.plots or len(val_idx):
            result.eval = finish(model, config, out, device, state.history, wall, split, val_idx)
    distributed.barrier(ctx)
    return result


def main_entry(config: TrainConfig) -> int:
    """Run training (``python -m training train``); returns the exit status."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    train(config)
    return 0
