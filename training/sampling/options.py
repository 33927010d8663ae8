"""Every sampler option in one validated, frozen dataclass: :class:`SamplerOptions`.

``grid_sample``, ``expected_linearized_sample``, ``GridSampler``, the linearized ``autograd.Function``, the
prefilter, the fused kernels and the reference formulation all take one ``SamplerOptions`` instead of
forwarding keyword arguments one by one. It is validated once, when it is built (``ConfigError``); the
per-call random generator is not an option (it is checked against the input's device at call time).

Forward names: the modes of ``SAMPLING_MODES`` plus ``"expected"``, the deterministic eval forward of
linearized sampling (:mod:`training.sampling.prefilter`). :meth:`SamplerOptions.forward` says which one a
sampler runs in training or in eval mode; :func:`training.sampling.dispatch.sample` runs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from training.errors import ConfigError
from training.sampling.modes import EVAL_FORWARDS, PADDING_CODES, PADDING_MODES, SAMPLING_MODES
from training.sampling.offsets import OffsetSpread, offset_spread

FORWARDS: tuple[str, ...] = (*SAMPLING_MODES, "expected")
"""Every forward that :func:`training.sampling.dispatch.sample` runs: the sampling modes and "expected"."""

BACKENDS: tuple[str, ...] = ("auto", "torch", "cpu", "triton")
"""Implementations of the linearized training forward: "auto" picks the fused kernel of the input's device
when it is available (the C++ kernel for float32/float64 CPU tensors, Triton for CUDA tensors), else the pure
PyTorch path; "torch" forces the PyTorch path; "cpu" and "triton" force a fused kernel (an error when it is
unavailable or does not take the input's device or dtype)."""


@dataclass(frozen=True)
class SamplerOptions:
    """The options of a sampler (all modes; the linearized ones are ignored by the other modes).

    Attributes:
        mode: the training-mode sampler, one of ``SAMPLING_MODES`` or "expected".
        padding_mode: "zeros", "border" or "reflection" (for the centre and the auxiliary samples alike).
        align_corners: as in ``torch.nn.functional.grid_sample``: +-1 are the centres of the border pixels
            (True) or their outer edges (False).
        eval_forward: what "linearized" runs in eval mode: "bilinear" (exact) or "expected" (bilinear over the
            Gaussian-prefiltered input). Other modes run themselves in eval mode.
        num_samples: linearized K, the centre plus K - 1 auxiliary samples per output location (>= 4).
        offset_std: linearized offset noise std, output pixels (None: 0.25).
        push_std: linearized push-away jitter std, input pixels (None: 1.0).
        exact_forward: linearized training forward value exactly bilinear, bit for bit (same gradients).
        backend: implementation of the linearized training forward, one of ``BACKENDS``.

    Raises:
        ConfigError: on construction, for any invalid value (the message names the expected and the actual).

    Example:
        >>> SamplerOptions("linearized", eval_forward="expected").forward(training=False)
        'expected'
    """

    mode: str = "linearized"
    padding_mode: str = "zeros"
    align_corners: bool = False
    eval_forward: str = "bilinear"
    num_samples: int = 8
    offset_std: float | None = None
    push_std: float | None = None
    exact_forward: bool = False
    backend: str = "auto"

    def __post_init__(self) -> None:
        if self.mode not in FORWARDS:
            raise ConfigError(f"mode must be one of {FORWARDS}, got {self.mode!r}")
        if self.padding_mode not in PADDING_MODES:
            raise ConfigError(f"padding_mode must be one of {PADDING_MODES}, got {self.padding_mode!r}")
        if self.eval_forward not in EVAL_FORWARDS:
            raise ConfigError(f"eval_forward must be one of {EVAL_FORWARDS}, got {self.eval_forward!r}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        for name in ("align_corners", "exact_forward"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be a bool, got {getattr(self, name)!r}")
        k = self.num_samples
        if isinstance(k, bool) or not isinstance(k, int) or k < 4:
            raise ConfigError(f"num_samples must be an int >= 4 (the centre plus >= 3 auxiliary), got {k!r}")
        for name in ("offset_std", "push_std"):
            value = getattr(self, name)
            if value is None:
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ConfigError(f"{name} must be a finite number >= 0 or None, got {value!r}")

    def forward(self, training: bool) -> str:
        """The forward a sampler with these options runs: ``mode`` in training; in eval mode ``eval_forward``
        for "linearized" and ``mode`` itself for the other (deterministic) modes."""
        if not training and self.mode == "linearized":
            return self.eval_forward
        return self.mode

    @property
    def padding_code(self) -> int:
        """aten's integer code of ``padding_mode`` (0 zeros, 1 border, 2 reflection)."""
        return PADDING_CODES[self.padding_mode]

    @property
    def num_aux(self) -> int:
        """K - 1, the auxiliary samples per output location."""
        return self.num_samples - 1

    def spread(self, in_size: tuple[int, int], out_size: tuple[int, int]) -> OffsetSpread:
        """Per-axis std of an auxiliary offset, normalized units, for (H_in, W_in) -> (H_out, W_out)."""
        return offset_spread(in_size, out_size, self.offset_std, self.push_std)

    def replace(self, **changes: Any) -> SamplerOptions:
        """A validated copy with ``changes`` (``dataclasses.replace``)."""
        return replace(self, **changes)
