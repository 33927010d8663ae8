"""``stn-c``: the transformer acts on feature maps after the classifier's first layers (Finnveden et al.)."""

from __future__ import annotations

from torch import Tensor, nn

from training.models.backbones import build_classifier, build_localisation
from training.models.common import TransformerClassifier
from training.models.config import ModelConfig


class STNC(TransformerClassifier):
    """Transform feature maps.

    The classifier's stem (stride 1, padded so it keeps the 50x50 frame) runs on the whole image; the
    localisation network sees the stem's features sampled through the initial warp and predicts dp; the
    features sampled through p = init o dp feed the rest of the classifier. The returned crop is the image
    sampled through p (for display).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        size = config.crop_size
        self.classifier = build_classifier(
            config.arch, size, config.num_classes, dropout=config.dropout, same_stem=True
        )
        self.localisation = build_localisation(
            config.arch, self.classifier.stem_channels, size, config.warp_type
        )

    def localisation_parameters(self) -> list[nn.Parameter]:
        """The localisation network's parameters (the shared stem belongs to the classifier)."""
        return list(self.localisation.parameters())

    def transform(self, x: Tensor, init_warp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, 3, 50, 50) standardized, init_warp (B, 3, 3) -> (logits, warp, crop (B, 3, S, S))."""
        features = self.classifier.stem(x)
        warp = self.refine(init_warp, self.localisation(self.sample(features, init_warp)))
        logits = self.classifier.body(self.sample(features, warp))
        return logits, warp, self.sample(x, warp)
