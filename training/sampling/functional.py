"""``grid_sample``: a drop-in replacement for ``torch.nn.functional.grid_sample`` with more modes.

Convention (as ``torch.nn.functional.grid_sample``): ``grid[n, i, j] = (x, y)`` is the input point sampled for
output pixel (i, j), in normalized coordinates: x = -1 is the left and x = +1 the right of the input, y = -1
the top and y = +1 the bottom. With ``align_corners=False`` the extremes are the outer *edges* of the border
pixels, with ``align_corners=True`` their *centres*. Points outside are read according to ``padding_mode``.

Both functions build one :class:`~training.sampling.options.SamplerOptions` (validated once) and call the one
dispatch point, :func:`training.sampling.dispatch.sample`.
"""

from __future__ import annotations

import torch

from training.sampling.dispatch import sample
from training.sampling.options import SamplerOptions


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
    backend: str = "auto",
    options: SamplerOptions | None = None,
) -> torch.Tensor:
    """Sample ``input`` at the points of ``grid``.

    Args:
        input: image batch, shape (N, C, H_in, W_in), floating point.
        grid: sampling points, shape (N, H_out, W_out, 2), normalized [-1, 1], x then y, same dtype and device
            as ``input``.
        mode: "bilinear", "nearest", "bicubic" (exactly torch's own), "linearized" (linearized multi-sampling:
            random in its forward value, plane-slope gradient w.r.t. ``grid``), "multiscale" (bilinear
            sampling of the pyramid level matching the grid's local footprint; deterministic) or "expected"
            (linearized sampling's deterministic eval forward, :func:`expected_linearized_sample`).
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
        backend: linearized only: "auto", "torch", "cpu" or "triton" (see
            :data:`training.sampling.options.BACKENDS`).
        options: all of the above but ``generator`` at once; when given, the other option arguments are
            ignored.

    Returns:
        (N, C, H_out, W_out), the input's dtype and device.

    Raises:
        ShapeError: bad shapes, dtypes, devices or batch sizes (the message names expected and actual).
        ConfigError: unknown mode or padding mode, invalid linearized option.

    Example:
        >>> x = torch.rand(2, 3, 50, 50)
        >>> theta = torch.tensor([[0.72, 0.0, 0.0], [0.0, 0.72, 0.0]]).expand(2, 2, 3)
        >>> g = torch.nn.functional.affine_grid(theta, (2, 3, 9, 9), align_corners=False)
        >>> grid_sample(x, g, mode="linearized").shape
        torch.Size([2, 3, 9, 9])
    """
    if options is None:
        options = SamplerOptions(
            mode=mode,
            padding_mode=padding_mode,
            align_corners=align_corners,
            num_samples=num_samples,
            offset_std=offset_std,
            push_std=push_std,
            exact_forward=exact_forward,
            backend=backend,
        )
    return sample(input, grid, options, generator=generator)


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
    Conv, GridSample). The same as ``grid_sample(..., mode="expected")``.

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
    options = SamplerOptions(
        mode="expected",
        padding_mode=padding_mode,
        align_corners=align_corners,
        num_samples=num_samples,
        offset_std=offset_std,
        push_std=push_std,
    )
    return sample(input, grid, options)
