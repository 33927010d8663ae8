"""``stn``: one predicted warp (Jaderberg et al. 2015, in the IC-STN protocol's form)."""

from __future__ import annotations

from torch import Tensor, nn

from training.models.backbones import build_classifier, build_localisation
from training.models.common import TransformerClassifier
from training.models.config import ModelConfig


class STN(TransformerClassifier):
    """One transformer step.

    The localisation network sees the crop sampled through the initial warp p0 and predicts dp; the final
    warp p = p0 o dp (``geometry.compose(p0, dp)``) re-samples the original 50x50 image, and the classifier
    sees that crop. (Unlike the original STN, which warps the already-cropped image, nothing is lost at the
    crop's border.)
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        size = config.crop_size
        self.localisation = build_localisation(config.arch, 3, config.loc_size, config.warp_type)
        self.classifier = build_classifier(config.arch, size, config.num_classes, dropout=config.dropout)

    def localisation_parameters(self) -> list[nn.Parameter]:
        """The localisation network's parameters."""
        return list(self.localisation.parameters())

    def transform(self, x: Tensor, init_warp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, 3, 50, 50) standardized, init_warp (B, 3, 3) -> (logits, warp, crop (B, 3, S, S))."""
        warp = self.refine(init_warp, self.localisation(self.sample_for_localisation(x, init_warp)))
        crop = self.sample(x, warp)
        return self.classifier(crop), warp, crop
