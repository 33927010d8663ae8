"""``icstn``: the Inverse Compositional STN (Lin & Lucey, CVPR 2017)."""

from __future__ import annotations

from torch import Tensor, nn

from training.models.backbones import build_classifier, build_localisation
from training.models.common import TransformerClassifier
from training.models.config import ModelConfig


class ICSTN(TransformerClassifier):
    """One geometric predictor applied recurrently ``warp_n`` times.

    Starting from p = init_warp, each step samples the ORIGINAL 50x50 image through p, predicts dp from that
    crop and composes p <- p o dp (``geometry.compose(p, dp)``: dp acts on output coordinates first). The
    classifier sees the image sampled through the final p. The predictor's weights are shared across steps,
    and gradients flow through every step.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        size = config.crop_size
        self.localisation = build_localisation(config.arch, 3, config.loc_size, config.warp_type)
        self.classifier = build_classifier(config.arch, size, config.num_classes, dropout=config.dropout)

    def localisation_parameters(self) -> list[nn.Parameter]:
        """The geometric predictor's parameters."""
        return list(self.localisation.parameters())

    def transform(self, x: Tensor, init_warp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, 3, 50, 50) standardized, init_warp (B, 3, 3) -> (logits, warp, crop (B, 3, S, S))."""
        warp = init_warp
        for _ in range(self.config.warp_n):
            warp = self.refine(warp, self.localisation(self.sample_for_localisation(x, warp)))
        crop = self.sample(x, warp)
        return self.classifier(crop), warp, crop
