"""A run's state across processes: what ``checkpoint.pt`` stores for ``--resume``, restoring it, and the
weights and lineage of a fine-tuning run (``--init-from``)."""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from training.config import TrainConfig, config_from_dict
from training.errors import CheckpointError
from training.models import TransformerClassifier
from training.models.checkpoint import read_checkpoint


def train_state(
    epoch: int,
    step: int,
    history: list[dict[str, Any]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generators: tuple[torch.Generator, torch.Generator],
    wall: float,
    ema: torch.optim.swa_utils.AveragedModel | None = None,
) -> dict[str, Any]:
    """The resumable state a per-epoch ``checkpoint.pt`` stores next to the weights."""
    state = {
        "epoch": epoch,
        "step": step,
        "history": history,
        "optimizer_state": optimizer.state_dict(),
        "scheduler_state": scheduler.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "perturbation": generators[0].get_state(),
            "augment": generators[1].get_state(),
        },
        "wall_time_s": wall,
    }
    if ema is not None:
        state["ema_state"] = ema.state_dict()
    return state


#: Model-config fields that may differ between a fine-tuning run and the checkpoint it starts from (they
#: change how the sampler behaves, not which weights exist).
FINE_TUNE_FREE = ("sampler", "eval_forward", "num_samples", "dropout", "loc_context")
RECURRENT_FREE = ("model_type", "warp_n")
"""Also free between an STN and an IC-STN: the IC-STN applies the STN's localisation network recurrently, so
the two have the same parameters, and a trained STN is a warm start for an IC-STN."""


def init_weights(model: TransformerClassifier, path: str, config: TrainConfig) -> dict[str, Any]:
    """Load the weights of the checkpoint at ``path`` into ``model`` (``run.init_from``, fine-tuning).

    The checkpoint's model config must equal ``config.model`` except for :data:`FINE_TUNE_FREE` (and
    :data:`RECURRENT_FREE` from an STN into an IC-STN or back); only the weights are taken (a ``model.pt`` of
    an EMA run holds the averaged ones), not the optimizer or step.

    Returns:
        the lineage the fine-tuned checkpoints record as ``fine_tuned_from`` (and export copies into the model
        card): the start checkpoint's path, sha256, epochs, wall time in seconds, training config and its
        own ``fine_tuned_from`` (None for a run from scratch).

    Raises:
        CheckpointError: unreadable file, another architecture, or weights that do not fit.
    """
    from training.models import load_checkpoint

    loaded = load_checkpoint(path)  # one-line CheckpointErrors for a missing, corrupt or unfitting file
    mine, theirs = asdict(config.model), asdict(loaded.model_config)
    free: tuple[str, ...] = FINE_TUNE_FREE
    if {mine["model_type"], theirs["model_type"]} <= {"stn", "icstn"}:
        free = FINE_TUNE_FREE + RECURRENT_FREE
    differ = [k for k in mine if k not in free and mine[k] != theirs[k]]
    if differ:
        shown = ", ".join(f"{k} {theirs[k]!r} vs {mine[k]!r}" for k in differ)
        raise CheckpointError(f"{path}: another architecture than this run's model config ({shown})")
    model.load_state_dict(loaded.model.state_dict())  # same architecture: the same parameters and buffers
    payload = loaded.payload
    return {
        "path": str(path),
        "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
        "epochs": payload.get("epoch"),
        "wall_time_s": payload.get("wall_time_s"),
        "train_config": payload.get("train_config"),
        "fine_tuned_from": payload.get("fine_tuned_from"),
    }


def lineage_entry(lineage: dict[str, Any] | None) -> dict[str, Any]:
    """The checkpoint entry that records a fine-tuning run's start (empty for a run from scratch)."""
    return {} if lineage is None else {"fine_tuned_from": lineage}


def resume(
    path: str,
    model: TransformerClassifier,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generators: tuple[torch.Generator, torch.Generator],
    config: TrainConfig,
    ema: torch.optim.swa_utils.AveragedModel | None = None,
) -> tuple[int, int, list[dict[str, Any]], float, dict[str, Any] | None]:
    """Restore a per-epoch checkpoint into the run's objects (weights, optimizer, schedule, RNG, EMA).

    Returns:
        ``(epoch, step, history, wall time so far in seconds, fine-tuning lineage or None)``.

    Raises:
        CheckpointError: not a resumable checkpoint, another model config, or state that does not fit.
    """
    payload = read_checkpoint(path)
    for key in ("optimizer_state", "scheduler_state", "epoch", "step", "rng"):
        if key not in payload:
            raise CheckpointError(f"{path}: not a resumable checkpoint (no {key!r}; use out/checkpoint.pt)")
    stored = payload.get("train_config")
    if stored is not None and config_from_dict(stored).model != config.model:
        raise CheckpointError(f"{path}: its model config differs from this run's model config")
    try:
        model.load_state_dict(payload["model_state"])
        optimizer.load_state_dict(payload["optimizer_state"])
        scheduler.load_state_dict(payload["scheduler_state"])
        torch.set_rng_state(payload["rng"]["torch"])
        generators[0].set_state(payload["rng"]["perturbation"])
        if "augment" in payload["rng"]:
            generators[1].set_state(payload["rng"]["augment"])
        if ema is not None:
            if "ema_state" not in payload:
                raise CheckpointError(f"{path}: was trained without optim.ema_decay; cannot resume with it")
            ema.load_state_dict(payload["ema_state"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: cannot resume: {exc}") from None
    return (
        int(payload["epoch"]),
        int(payload["step"]),
        list(payload.get("history", [])),
        float(payload.get("wall_time_s", 0.0)),
        payload.get("fine_tuned_from"),
    )
