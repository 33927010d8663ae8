"""One optimizer step and one epoch of them, on a :class:`Trainer` (what a run built once) and a
:class:`LoopState` (what changes from step to step).

The order of operations is the training protocol's and must not change, or the same seeds stop giving the
same losses: per batch, the photometric augmentation draws from the augmentation generator, then the IC-STN
perturbation (and the rotation of rotated GTSRB) from the perturbation generator; then the forward, the loss
(cross-entropy plus the optional supervised alignment term), the backward, gradient clipping, the optimizer,
the schedule and the EMA.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training import alignment, augment, distributed, geometry
from training.config import TrainConfig
from training.errors import TrainingError
from training.models import TransformerClassifier
from training.reporting import Progress, log

MAX_BAD_STEPS = 10
"""Consecutive batches with a non-finite loss a single process skips before it stops with a TrainingError."""


@dataclass
class Trainer:
    """What a run builds once and every step uses.

    Attributes:
        model: the model itself (EMA, clipping and checkpoints use it); ``ddp_model`` runs the forward (the
            same module, wrapped in DDP under torchrun).
        images: (N, 3, 50, 50) uint8 training images, ``labels`` (N,) their classes (on the device for CUDA).
        perturbation, augmentation: this rank's generators of the IC-STN perturbations and of the
            photometric augmentation.
        align_weight: weight of the supervised alignment loss (0: off); ``roi50`` the (N, 4) boxes it needs.
        amp_dtype: the autocast dtype on CUDA with ``run.amp``, else None; ``scaler`` for float16.
    """

    config: TrainConfig
    device: torch.device
    ctx: distributed.DistContext
    model: TransformerClassifier
    ddp_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: torch.optim.swa_utils.AveragedModel | None
    images: torch.Tensor
    labels: torch.Tensor
    perturbation: torch.Generator
    augmentation: torch.Generator
    photometric: augment.PhotometricSpec
    align_weight: float = 0.0
    roi50: torch.Tensor | None = None
    amp_dtype: torch.dtype | None = None
    scaler: Any = None

    @property
    def generators(self) -> tuple[torch.Generator, torch.Generator]:
        """(perturbation, augmentation), the order checkpoints store them in."""
        return self.perturbation, self.augmentation


@dataclass
class LoopState:
    """What changes while training: the global step, the epoch records so far, the skipped batches in a
    row, and the wall time of earlier (resumed) segments in seconds."""

    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    bad_steps: int = 0
    prior_wall: float = 0.0


@dataclass
class StepResult:
    """The figures of one step: summed loss (loss * images), wrong predictions, images."""

    loss_sum: float
    wrong: float
    images: int


def train_step(trainer: Trainer, state: LoopState, rows: torch.Tensor) -> StepResult | None:
    """One optimizer step on the training rows ``rows``; None when the loss is not finite (batch skipped).

    Raises:
        TrainingError: the loss stayed non-finite for :data:`MAX_BAD_STEPS` batches (under DDP: at once).
    """
    t, config, device = trainer, trainer.config, trainer.device
    x = t.images[rows].to(device, non_blocking=True).float()
    x = augment.photometric(x, t.photometric, t.augmentation)
    y = t.labels[rows].to(device, non_blocking=True)
    init = geometry.perturbation_warps(
        x.shape[0],
        scale=config.data.perturbation_scale,
        translation_scale=config.data.translation_scale,
        generator=t.perturbation,
        dtype=torch.float32,
    )
    if config.data.rotation_deg > 0:  # rotated GTSRB: rotate the frames' pixels, then perturb
        rotations, _ = geometry.random_rotations(
            x.shape[0], config.data.rotation_deg, generator=t.perturbation
        )
        x = geometry.rotate_frames(x, rotations)
    init = init.to(device)
    amp = t.amp_dtype
    with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
        output = t.ddp_model(x, init)
        loss = F.cross_entropy(output.logits.float(), y, label_smoothing=config.optim.label_smoothing)
        if t.align_weight > 0:
            targets = alignment.target_corners(
                None if t.roi50 is None else t.roi50[rows.cpu()],
                config.optim.align_target,
                config.optim.align_margin_px,
                x.shape[0],
            )
            loss = loss + t.align_weight * alignment.alignment_loss(output.warp, targets)
    if non_finite(loss, t.ctx):
        state.bad_steps += 1
        if t.ctx.enabled or state.bad_steps >= MAX_BAD_STEPS:
            raise TrainingError(
                f"the loss is not finite at step {state.step + 1} ({state.bad_steps} bad batches in a row); "
                "lower optim.lr or optim.loc_lr_scale, or set optim.grad_clip"
            )
        log(f"warning: non-finite loss at step {state.step + 1}, batch skipped", t.ctx)
        return None
    state.bad_steps = 0
    _update(t, loss)
    state.step += 1
    with torch.no_grad():
        wrong = (output.logits.argmax(1) != y).sum().item()
    return StepResult(loss.item() * x.shape[0], wrong, x.shape[0])


def _update(t: Trainer, loss: torch.Tensor) -> None:
    """Backward, clipping, optimizer, schedule and EMA (with the float16 scaler when there is one)."""
    t.optimizer.zero_grad(set_to_none=True)
    if t.scaler is not None:
        t.scaler.scale(loss).backward()
        t.scaler.unscale_(t.optimizer)
    else:
        loss.backward()
    if t.config.optim.grad_clip is not None:
        nn.utils.clip_grad_norm_(t.model.parameters(), t.config.optim.grad_clip)
    if t.scaler is not None:
        t.scaler.step(t.optimizer)
        t.scaler.update()
    else:
        t.optimizer.step()
    t.scheduler.step()
    if t.ema is not None:
        t.ema.update_parameters(t.model)


def non_finite(loss: torch.Tensor, ctx: distributed.DistContext) -> bool:
    """True when the loss is NaN/inf on this process (under DDP: on any process, so all ranks agree)."""
    bad = torch.tensor([0.0 if bool(torch.isfinite(loss.detach())) else 1.0])
    return bool(distributed.all_reduce_sum(bad, ctx).item() > 0)


def epoch_order(n: int, seed: int, epoch: int, ctx: distributed.DistContext) -> np.ndarray:
    """This rank's shuffled row order for an epoch (every rank gets the same number of rows)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    per_rank = n // ctx.world_size if ctx.world_size > 1 else n
    return order[ctx.rank :: ctx.world_size][:per_rank]


@dataclass
class Segment:
    """Throughput bookkeeping of this process's run segment (since start or resume), for the progress line."""

    start: float
    step0: int
    total_steps: int


def run_epoch(
    trainer: Trainer,
    state: LoopState,
    epoch: int,
    train_idx: np.ndarray,
    steps_per_epoch: int,
    segment: Segment,
    progress: Progress,
) -> torch.Tensor:
    """Up to ``steps_per_epoch`` steps over this epoch's shuffled rows of ``train_idx``.

    Returns:
        this rank's (3,) float64 sums: loss * images, wrong predictions, images.
    """
    config, ctx = trainer.config, trainer.ctx
    batch = config.optim.batch_size
    order = train_idx[epoch_order(len(train_idx), config.run.seed, epoch, ctx)]
    sums = torch.zeros(3, dtype=torch.float64)  # loss*n, wrong, n
    for b in range(steps_per_epoch):
        if state.step >= segment.total_steps:
            break
        rows = torch.from_numpy(order[b * batch : (b + 1) * batch]).to(trainer.images.device)
        result = train_step(trainer, state, rows)
        if result is None:
            continue
        sums += torch.tensor([result.loss_sum, result.wrong, result.images], dtype=torch.float64)
        elapsed = time.perf_counter() - segment.start
        ips = (state.step - segment.step0) * batch * ctx.world_size / max(elapsed, 1e-9)
        eta = (segment.total_steps - state.step) * batch * ctx.world_size / max(ips, 1e-9)
        progress.update(
            state.step,
            epoch,
            config.optim.epochs,
            sums[0].item() / sums[2].item(),
            sums[1].item() / sums[2].item(),
            ips,
            eta,
        )
    return sums
