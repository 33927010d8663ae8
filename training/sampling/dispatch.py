"""The one dispatch point of the samplers: :func:`sample` runs any forward of :data:`FORWARDS` with one
:class:`~training.sampling.options.SamplerOptions`.

``grid_sample``, ``expected_linearized_sample`` and ``GridSampler`` (training and eval mode) all call it:

* "bilinear", "nearest", "bicubic": torch's ``grid_sample`` as it is;
* "linearized": the stochastic forward (:mod:`training.sampling.linearized`, backend per ``options.backend``);
* "multiscale": the mipmap baseline (:mod:`training.sampling.multiscale`);
* "expected": the deterministic eval forward of linearized sampling (:mod:`training.sampling.prefilter`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from training.errors import ConfigError
from training.sampling.linearized import linearized_grid_sample
from training.sampling.multiscale import multiscale_grid_sample
from training.sampling.options import FORWARDS, SamplerOptions
from training.sampling.prefilter import expected_grid_sample
from training.sampling.validation import check_generator, check_sampler_inputs


def sample(
    input: torch.Tensor,
    grid: torch.Tensor,
    options: SamplerOptions,
    *,
    forward: str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample ``input`` at ``grid`` with the forward ``forward`` (default ``options.mode``).

    Args:
        input: (N, C, H_in, W_in), floating point.
        grid: (N, H_out, W_out, 2), normalized [-1, 1], x then y, the input's dtype and device.
        options: the validated options (padding, align_corners, linearized K, spreads, backend).
        forward: one of :data:`FORWARDS`; None runs ``options.mode`` (``options.forward(training)`` gives the
            forward of a module in training or eval mode).
        generator: "linearized" only: a ``torch.Generator`` on the input's device type (None: torch's
            default).

    Returns:
        (N, C, H_out, W_out), the input's dtype and device.

    Raises:
        ShapeError: bad shapes, dtypes, devices, batch sizes, or a generator on another device type.
        ConfigError: an unknown forward, a bad generator, or a forced backend unavailable for the input.
    """
    name = options.mode if forward is None else forward
    check_sampler_inputs(input, grid)
    if name == "linearized":
        check_generator(generator, input.device)
        return linearized_grid_sample(input, grid, options, generator)
    if name == "expected":
        return expected_grid_sample(input, grid, options)
    if name == "multiscale":
        return multiscale_grid_sample(input, grid, options.padding_mode, options.align_corners)
    if name in ("bilinear", "nearest", "bicubic"):
        return F.grid_sample(
            input, grid, mode=name, padding_mode=options.padding_mode, align_corners=options.align_corners
        )
    raise ConfigError(f"mode must be one of {FORWARDS}, got {name!r}")
