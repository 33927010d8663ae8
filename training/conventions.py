"""The conventions every part of training shares, in one place: frames and crops, warps, samplers.

Imports nothing heavy (no torch, no numpy), so configuration code and the CLI can use it. The other modules
import these names rather than restating them: ``geometry`` (warp maths), ``models.config`` (config
validation), ``models.backbones`` (warp parameters), ``data.resize`` (the input resize) and
``sampling.modes`` (a re-export for the sampler package). The bundle a model exports records the frame, the
box and the resize in its card (docs/model-bundle.md, ``service.contract``), so the service reads them from
there, never from here.

Frames: the network input is the whole image resized to ``FRAME_SIZE`` x ``FRAME_SIZE`` pixels (pixel edges
at integers, x right, y down). The canonical crop is the central ``CANONICAL_SIZE`` box ``CROP_BOX``; one
canonical unit is ``CANONICAL_UNIT_PX`` pixels, so the box spans [-1, 1]^2 in canonical coordinates.
"""

from __future__ import annotations

from typing import Final, Literal

from training.errors import ConfigError

# ----------------------------------------------------------------------------------------------------------
# Frames and crops
# ----------------------------------------------------------------------------------------------------------

FRAME_SIZE: Final = 50
"""Side of the network's input frame in pixels (the whole image resized, aspect ratio not kept)."""
CANONICAL_SIZE: Final = 36
"""Side of the canonical crop box in frame pixels (IC-STN's central 36x36 box)."""
CANONICAL_UNIT_PX: Final = CANONICAL_SIZE // 2
"""Pixels per canonical unit (half the side of the canonical box: 18)."""
_MARGIN: Final = (FRAME_SIZE - CANONICAL_SIZE) // 2
CROP_BOX: Final = (_MARGIN, _MARGIN, _MARGIN + CANONICAL_SIZE, _MARGIN + CANONICAL_SIZE)
"""The canonical crop box (x0, y0, x1, y1) in frame pixel coordinates, edges at integers: (7, 7, 43, 43)."""
FRAME_EXTENT: Final = FRAME_SIZE / (2 * CANONICAL_UNIT_PX)
"""Half-side of the whole frame in canonical units (25/18)."""

DOWNSAMPLING_RATES: Final = (1, 2, 4, 8)
"""The transformer's downsampling rates r: it outputs :func:`crop_size` (r) pixels a side."""


def crop_size(downsampling_rate: int) -> int:
    """Side S of the transformer's output at downsampling rate r: 36 / r rounded half up (36, 18, 9, 5).

    Raises:
        ConfigError: r < 1.
    """
    if downsampling_rate < 1:
        raise ConfigError(f"downsampling_rate: expected a positive integer, got {downsampling_rate}")
    return int(CANONICAL_SIZE / downsampling_rate + 0.5)


RESIZE_METHOD: Final[dict[str, object]] = {
    "library": "Pillow",
    "method": "bilinear",
    "width": FRAME_SIZE,
    "height": FRAME_SIZE,
    "keep_aspect_ratio": False,
}
"""The resize that makes the network input (``data.resize``), recorded in a bundle's ``input.resize``; copy
it (``dict(RESIZE_METHOD)``) to change it."""

# ----------------------------------------------------------------------------------------------------------
# Warps
# ----------------------------------------------------------------------------------------------------------

WarpType = Literal["translation", "similarity", "affine", "homography"]
WARP_TYPES: Final[tuple[WarpType, ...]] = ("translation", "similarity", "affine", "homography")
WARP_DIMS: Final[dict[str, int]] = {"translation": 2, "similarity": 4, "affine": 6, "homography": 8}
"""Number of parameters of each warp type."""

# ----------------------------------------------------------------------------------------------------------
# Samplers
# ----------------------------------------------------------------------------------------------------------

SamplingMode = Literal["bilinear", "nearest", "bicubic", "linearized", "multiscale"]
PaddingMode = Literal["zeros", "border", "reflection"]
EvalForward = Literal["bilinear", "expected"]

SAMPLING_MODES: Final[tuple[str, ...]] = ("bilinear", "nearest", "bicubic", "linearized", "multiscale")
"""Training modes of the sampler (``model.sampler``)."""
PADDING_MODES: Final[tuple[str, ...]] = ("zeros", "border", "reflection")
EVAL_FORWARDS: Final[tuple[str, ...]] = ("bilinear", "expected")
"""Deterministic forwards of the linearized sampler in eval mode and in the ONNX graph
(``model.eval_forward``): exact bilinear, or bilinear sampling of a Gaussian-prefiltered input (the training
forward's expectation)."""

INTERPOLATION_CODES: Final[dict[str, int]] = {"bilinear": 0, "nearest": 1, "bicubic": 2}
"""The integer codes of aten's grid_sampler kernels."""
PADDING_CODES: Final[dict[str, int]] = {"zeros": 0, "border": 1, "reflection": 2}
