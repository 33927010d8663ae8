"""``build_model(ModelConfig) -> TransformerClassifier``: the one place that maps model types to classes."""

from __future__ import annotations

from training.models.cnn import CNN
from training.models.common import TransformerClassifier
from training.models.config import ModelConfig
from training.models.icstn import ICSTN
from training.models.stn import STN
from training.models.stn_c import STNC
from training.models.stn_sl import STNSL

_CLASSES: dict[str, type[TransformerClassifier]] = {
    "cnn": CNN,
    "stn": STN,
    "icstn": ICSTN,
    "stn-c": STNC,
    "stn-sl": STNSL,
}


def build_model(config: ModelConfig) -> TransformerClassifier:
    """Build the model ``config`` describes (fresh weights; localisation warps start at the identity)."""
    return _CLASSES[config.model_type](config)


def count_parameters(model: TransformerClassifier) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
