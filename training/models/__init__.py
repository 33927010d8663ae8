"""Spatial-transformer traffic-sign classifiers: ``build_model(ModelConfig)``.

The model classes import torch; ``ModelConfig`` and ``crop_size`` do not. Every name loads on first use, so
``training.models.config`` stays torch-free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from training._lazy import lazy_exports

if TYPE_CHECKING:
    from training.models.checkpoint import load_checkpoint, save_checkpoint
    from training.models.common import ExportModule, ModelOutput, TransformerClassifier
    from training.models.config import ModelConfig, crop_size
    from training.models.factory import build_model, count_parameters

__all__ = [
    "ExportModule",
    "ModelConfig",
    "ModelOutput",
    "TransformerClassifier",
    "build_model",
    "count_parameters",
    "crop_size",
    "load_checkpoint",
    "save_checkpoint",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "load_checkpoint": "training.models.checkpoint",
        "save_checkpoint": "training.models.checkpoint",
        "ExportModule": "training.models.common",
        "ModelOutput": "training.models.common",
        "TransformerClassifier": "training.models.common",
        "ModelConfig": "training.models.config",
        "crop_size": "training.models.config",
        "build_model": "training.models.factory",
        "count_parameters": "training.models.factory",
    },
)
