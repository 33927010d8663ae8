"""The alignment study's configuration (no torch import, so the CLI's parser stays light)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from training.errors import ConfigError

SAMPLER_VARIANTS: Final[dict[str, tuple[str, bool]]] = {
    "bilinear": ("bilinear", False),
    "multiscale": ("multiscale", False),
    "linearized": ("linearized", False),
    "linearized-exact": ("linearized", True),
}
"""Sampler name -> (``grid_sample`` mode, ``exact_forward``)."""

DEFAULT_SAMPLERS: Final = ("bilinear", "multiscale", "linearized", "linearized-exact")
DEFAULT_RATES: Final = (1, 2, 4, 8)
DEFAULT_LRS: Final = (0.003, 0.01, 0.03, 0.1, 0.3)
NUM_TEST_IMAGES: Final = 12630
"""Images in GTSRB Final_Test (the rows of the packed test file)."""


@dataclass(frozen=True)
class AlignmentConfig:
    """Everything that defines an alignment study (stored in its JSON).

    Attributes:
        samplers: names of :data:`SAMPLER_VARIANTS` to compare.
        rates: downsampling rates r; the target and the sampled crop are S = 36 / r px a side.
        num_images: evaluation images (a seeded random sample of the test set).
        tune_images: tuning images for the learning-rate sweep (disjoint from the evaluation images; 0: no
            sweep, every cell uses ``lrs[0]``).
        lrs: Adam learning rates tried (canonical units of the homography parameters per step).
        iterations: Adam steps per image.
        seed: seeds the image choice (numpy), the true warps (torch) and the linearized offsets (torch,
            ``seed + 1``, a fresh generator per cell).
        perturbation_scale: std of each corner's own displacement of the true warp (canonical units).
        translation_scale: std of the shared translation of the true warp (canonical units).
        success_px: success threshold on the mean corner error, px of the 50x50 frame.
    """

    samplers: tuple[str, ...] = DEFAULT_SAMPLERS
    rates: tuple[int, ...] = DEFAULT_RATES
    num_images: int = 1000
    tune_images: int = 128
    lrs: tuple[float, ...] = DEFAULT_LRS
    iterations: int = 300
    seed: int = 0
    perturbation_scale: float = 0.25
    translation_scale: float = 0.25
    success_px: float = 1.0

    def __post_init__(self) -> None:
        unknown = [s for s in self.samplers if s not in SAMPLER_VARIANTS]
        if unknown or not self.samplers:
            known = ", ".join(SAMPLER_VARIANTS)
            raise ConfigError(f"samplers: expected some of {known}, got {self.samplers}")
        if not self.rates or any(r not in DEFAULT_RATES for r in self.rates):
            raise ConfigError(f"rates: expected some of {DEFAULT_RATES}, got {self.rates}")
        if self.num_images < 1 or self.tune_images < 0:
            raise ConfigError("num_images must be >= 1 and tune_images >= 0")
        if self.num_images + self.tune_images > NUM_TEST_IMAGES:
            raise ConfigError(f"num_images + tune_images must be <= {NUM_TEST_IMAGES}")
        if not self.lrs or any(not lr > 0 for lr in self.lrs):
            raise ConfigError(f"lrs: expected positive learning rates, got {self.lrs}")
        if self.iterations < 1:
            raise ConfigError(f"iterations = {self.iterations}: expected >= 1")
        if self.perturbation_scale < 0 or self.translation_scale < 0 or not self.success_px > 0:
            raise ConfigError("perturbation scales must be >= 0 and success_px > 0")
