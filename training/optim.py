"""What updates the weights: the optimizer, the learning-rate schedule and the weight EMA of a run.

Each builder reads ``config.optim`` (:class:`training.config.OptimConfig`) only; the training loop
(:mod:`training.train`) calls them once per run, and benchmarks/whole_image_baseline.py reuses
:func:`build_scheduler`.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
from torch import nn

from training.config import TrainConfig
from training.models import TransformerClassifier


def build_optimizer(model: TransformerClassifier, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam / AdamW / SGD with two parameter groups: classifier (lr) and localisation (lr * loc_lr_scale)."""
    o = config.optim
    loc_ids = {id(p) for p in model.localisation_parameters()}
    rest = [p for p in model.parameters() if id(p) not in loc_ids]
    groups: list[dict[str, Any]] = [{"params": rest, "lr": o.lr, "name": "classifier"}]
    if loc_ids:
        groups.append(
            {"params": model.localisation_parameters(), "lr": o.lr * o.loc_lr_scale, "name": "localisation"}
        )
    if o.optimizer == "adam":
        return torch.optim.Adam(groups, lr=o.lr, weight_decay=o.weight_decay)
    if o.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=True, weight_decay=o.weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step schedule: cosine (linear warm-up then cosine to 0), one-cycle, or constant."""
    o = config.optim
    total = max(1, total_steps)
    if o.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total + 1
        )
    warmup = min(total - 1, int(o.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if o.schedule == "constant":
            return 1.0
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_ema(model: nn.Module, decay: float | None) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of ``model``'s parameters and buffers (None when ``decay`` is None)."""
    if decay is None:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def averaged(
    model: TransformerClassifier, ema: torch.optim.swa_utils.AveragedModel | None
) -> TransformerClassifier:
    """The model to evaluate: the moving average when there is one, else ``model`` itself."""
    if ema is None:
        return model
    return cast(TransformerClassifier, ema.module)
