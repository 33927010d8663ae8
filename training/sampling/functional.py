"""``grid_sample``: a drop-in replacement for ``torch.nn.functional.grid_sample`` with more modes.

Convention (as ``torch.nn.functional.grid_sample``): ``grid[n, i, j] = (x, y)`` is the input point sampled for
output pixel (i, j), in normalized coordinates: x = -1 is the left and x = +1 the right of the input, y = -1
the top and y = +1 the bottom. With ``align_corners=False`` the extremes are the outer *edges* of the border
pixels, with ``align_corners=True`` their *centres*. Points outside are read according to ``padding_mode``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from training.sampling.linearized import linearized_grid_sample
from training.sampling.multiscale import multiscale_grid_sample
from training.sampling.prefilter import expected_grid_sample
from training.sampling.validation import (
    check_linearized_options,
    check_mode,
    check_sampler_inputs,
)


def grid_sample(
    input: torch.Tensor,
    grid: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = False,
    *,
    num_samples: int = 8,
    offset_std: float | None = None,
    push_std: float | None = None,
    exact_forward: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample ``input`` at the points of ``grid``.

    Args:
        input: image batch, shape (N, C, H_in, W_in), floating point.
        grid: sampling points, shape (N, H_out, W_out, 2), normalized [-1, 1], x then y, same dtype and device
            as ``input``.
        mode: "bilinear", "nearest", "bicubic" (exactly torch's own), "linearized" (linearized multi-sampling:
            random in its forward value, plane-slope gradient w.r.t. ``grid``) or "multiscale" (bilinear
            sampling of the pyramid level matching the grid's local footprint; deterministic).
        padding_mode: "zeros", "border" or "reflection".
        align_corners: as in ``torch.nn.functional.grid_sample``.
        num_samples: linearized only: K, the centre plus K - 1 auxiliary samples per output location (>= 4).
        offset_std: linearized only: std of the auxiliary offset noise, in output pixels (None: 0.25, i.e.
            ``0.5 / W_out`` in normalized units).
        push_std: linearized only: std of the push-away jitter, in input pixels (None: 1.0, i.e.
            ``2 / W_in``).
        exact_forward: linearized only: return exactly the bilinear sample (bit for bit), same gradients.
        generator: linearized only: ``torch.Generator`` (on the input's device) for the offsets; None uses
            torch's default generator.

    Returns:
        (N, C, H_out, W_out), the input's dtype and device.

    Raises:
        ShapeError: bad shapes, dtypes, devices or batch sizes (the message names expected and actual).
        ConfigError: unknown mode or padding mode, invalid linearized option.

    Example:
        >>> x = torch.rand(2, 3, 50, 50)
        >>> theta = torch.tensor([[0.72, 0.0, 0.0], [0.0, 0.72, 0.0]]).expand(2, 2, 3)
        >>> g = F.affine_grid(theta, (2, 3, 9, 9), align_corners=False)
        >>> grid_sample(x, g, mode="linearized").shape
        torch.Size([2, 3, 9, 9])
    """
    check_sampler_inputs(input, grid)
    check_mode(mode, padding_mode)
    if mode == "linearized":
        check_linearized_options(num_samples, offset_std, push_std, generator, input.device)
        return linearized_grid_sample(
            input,
            grid,
            padding_mode,
            align_corners,
            num_samples=num_samples,
            offset_std=offset_std,
            push_std=push_std,
            exact_forward=exact_forward,
            generator=generator,
        )
    if mode == "multiscale":
        return multiscale_grid_sample(input, grid, padding_mode, align_corners)
    return F.grid_sample(input, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)


def expected_linearized_sample(
    input: torch.Tensor,
    grid: torch.Tensor,
    padding_mode: str = "zeros",
    align_corners: bool = False,
    *,
    num_samples: int = 8,
    offset_std: float | None = None,
    push_std: float | None = None,
) -> torch.Tensor:
    """The deterministic "expected" forward of linearized sampling: bilinear sampling of the input
    prefiltered by the Gaussian of the auxiliary offsets' spread (standard ops only: Pad/Gather, depthwise
    Conv, GridSample).

    Args:
        input: (N, C, H_in, W_in), floating point.
        grid: (N, H_out, W_out, 2), normalized [-1, 1], x then y.
        padding_mode: "zeros", "border" or "reflection".
        align_corners: as in ``torch.nn.functional.grid_sample``.
        num_samples: K of the training forward (the Gaussian's covariance is (K - 3) / (K - 1) times the
            offsets').
        offset_std: as in :func:`grid_sample` (output pixels; None: 0.25).
        push_std: as in :func:`grid_sample` (input pixels; None: 1.0).

    Returns:
        (N, C, H_out, W_out), the input's dtype.
    """
    check_sampler_inputs(input, grid)
    check_mode("linearized", padding_mode)
    check_linearized_options(num_samples, offset_std, push_std, None, input.device)
    return expected_grid_sample(
        input,
        grid,
        padding_mode,
        align_corners,
        num_samples=num_samples,
        offset_std=offset_std,
        push_std=push_std,
    )
