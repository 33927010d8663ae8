"""Names of the sampling modes, padding modes and inference forwards (no torch import)."""

from __future__ import annotations

from typing import Literal

SamplingMode = Literal["bilinear", "nearest", "bicubic", "linearized", "multiscale"]
PaddingMode = Literal["zeros", "border", "reflection"]
EvalForward = Literal["bilinear", "expected"]

SAMPLING_MODES: tuple[str, ...] = ("bilinear", "nearest", "bicubic", "linearized", "multiscale")
PADDING_MODES: tuple[str, ...] = ("zeros", "border", "reflection")
EVAL_FORWARDS: tuple[str, ...] = ("bilinear", "expected")

# The integer codes of aten's grid_sampler kernels.
INTERPOLATION_CODES: dict[str, int] = {"bilinear": 0, "nearest": 1, "bicubic": 2}
PADDING_CODES: dict[str, int] = {"zeros": 0, "border": 1, "reflection": 2}
