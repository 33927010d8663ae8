"""Names of the sampling modes, padding modes and inference forwards (no torch import).

A re-export of :mod:`training.conventions`, where they are defined, kept so the sampler package can import
them from beside it.
"""

from __future__ import annotations

from training.conventions import (
    EVAL_FORWARDS,
    INTERPOLATION_CODES,
    PADDING_CODES,
    PADDING_MODES,
    SAMPLING_MODES,
    EvalForward,
    PaddingMode,
    SamplingMode,
)

__all__ = [
    "EVAL_FORWARDS",
    "INTERPOLATION_CODES",
    "PADDING_CODES",
    "PADDING_MODES",
    "SAMPLING_MODES",
    "EvalForward",
    "PaddingMode",
    "SamplingMode",
]
