"""``cnn``: no transformer; the classifier sees the crop sampled through the given initial warp."""

from __future__ import annotations

from torch import Tensor

from training.models.backbones import build_classifier
from training.models.common import TransformerClassifier
from training.models.config import ModelConfig


class CNN(TransformerClassifier):
    """The baseline: crop = sample(image, init_warp); logits = classifier(crop); warp = init_warp."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.classifier = build_classifier(
            config.arch, config.crop_size, config.num_classes, dropout=config.dropout, full=True
        )

    def transform(self, x: Tensor, init_warp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, 3, 50, 50) standardized, init_warp (B, 3, 3) -> (logits, init_warp, crop (B, 3, S, S))."""
        crop = self.sample(x, init_warp)
        return self.classifier(crop), init_warp, crop
