"""``stn-sl``: the localisation network shares the classifier's first layers (Finnveden et al.)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from training.models.backbones import build_classifier, build_localisation
from training.models.common import TransformerClassifier
from training.models.config import ModelConfig


class STNSL(TransformerClassifier):
    """Shared localisation.

    The classifier's stem runs on the crop sampled through the initial warp; a localisation head on those
    shared features predicts dp; the input image is re-sampled through p = init o dp and classified (stem
    included).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        size = config.crop_size
        self.classifier = build_classifier(config.arch, size, config.num_classes, dropout=config.dropout)
        with torch.no_grad():
            stem_size = int(self.classifier.stem(torch.zeros(1, 3, size, size)).shape[-1])
        self.localisation = build_localisation(
            config.arch, self.classifier.stem_channels, stem_size, config.warp_type
        )

    def localisation_parameters(self) -> list[nn.Parameter]:
        """The localisation head's parameters (the shared stem belongs to the classifier)."""
        return list(self.localisation.parameters())

    def transform(self, x: Tensor, init_warp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, 3, 50, 50) standardized, init_warp (B, 3, 3) -> (logits, warp, crop (B, 3, S, S))."""
        shared = self.classifier.stem(self.sample(x, init_warp))
        warp = self.refine(init_warp, self.localisation(shared))
        crop = self.sample(x, warp)
        return self.classifier(crop), warp, crop
