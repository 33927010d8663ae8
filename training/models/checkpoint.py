"""Checkpoints that rebuild their model without the training script (nanoGPT style).

A checkpoint is a ``torch.save``d dict holding only tensors and plain Python values (it loads with
``weights_only=True``)::

    {"format": "stn-signs-checkpoint", "format_version": 1,
     "model_config": ModelConfig.to_dict(), "model_state": state_dict,
     "train_config": resolved training config (dict) or None,
     ... training state (optimizer, scheduler, epoch, step, rng, history, wall_time_s) ...}
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from training.errors import CheckpointError, TrainingError
from training.models.common import TransformerClassifier
from training.models.config import ModelConfig
from training.models.factory import build_model

CHECKPOINT_FORMAT = "stn-signs-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass
class LoadedCheckpoint:
    """A rebuilt model (eval mode, on the requested device) and the checkpoint's other entries."""

    model: TransformerClassifier
    model_config: ModelConfig
    train_config: dict[str, Any] | None
    payload: dict[str, Any]
    path: Path


def save_checkpoint(
    path: str | Path,
    model: TransformerClassifier,
    *,
    train_config: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (temporary file then rename).

    Args:
        path: destination file (parents are created).
        model: the (unwrapped, not DDP) model; its ``config`` is stored as the constructor arguments.
        train_config: the resolved training config as a plain dict.
        extra: training state (optimizer/scheduler state dicts, epoch, step, rng states, history, ...).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "model_config": model.config.to_dict(),
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "train_config": train_config,
    }
    payload.update(extra or {})
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a checkpoint's dict; :class:`CheckpointError` names the file on any problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types (pickle, zip, runtime) for a corrupt file
        raise CheckpointError(
            f"cannot read checkpoint {path}: corrupt or not a torch checkpoint ({type(exc).__name__})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a {CHECKPOINT_FORMAT} file")
    if payload.get("format_version") != CHECKPOINT_VERSION:
        version = payload.get("format_version")
        raise CheckpointError(f"{path}: checkpoint format version {version!r}, expected {CHECKPOINT_VERSION}")
    for key in ("model_config", "model_state"):
        if key not in payload:
            raise CheckpointError(f"{path}: checkpoint has no {key!r}")
    return payload


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", *, eval_forward: str | None = None
) -> LoadedCheckpoint:
    """Rebuild the model a checkpoint describes, load its weights and put it in eval mode.

    Args:
        path: a ``model.pt`` or ``checkpoint.pt`` written by training.
        map_location: device the weights are loaded onto.
        eval_forward: override the linearized sampler's deterministic eval forward ("bilinear" or
            "expected"); None keeps the one the checkpoint was trained with. Only inference changes: the
            weights are the same, and evaluation and export record the forward they used.

    Raises:
        CheckpointError: missing or corrupt file, unknown format, or weights that do not fit the model config.
    """
    path = Path(path)
    payload = read_checkpoint(path, map_location)
    try:
        model_config = dict(payload["model_config"])
        if eval_forward is not None:
            model_config["eval_forward"] = eval_forward
        config = ModelConfig.from_dict(model_config)
        model = build_model(config)
        model.load_state_dict(payload["model_state"])
    except (TrainingError, RuntimeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the model: {exc}") from None
    model.to(map_location).eval()
    return LoadedCheckpoint(model, config, payload.get("train_config"), payload, path)
