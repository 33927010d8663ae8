"""Spatial-transformer traffic-sign classifiers (imports torch): ``build_model(ModelConfig)``."""

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
