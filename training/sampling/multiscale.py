"""The multi-scale baseline: bilinear sampling of the pyramid level that matches the grid's local footprint.

Choices (documented in docs/sampler.md):

* Pyramid (a mipmap): level 0 is the input; level l + 1 averages the 2x2 blocks of level l (box low-pass
  filter, then halving), after repeating the last row / column when the size is odd, so that level l pixel i
  covers exactly the input pixels ``[2^l i, 2^l (i + 1))`` (beyond the border: the border pixel repeated).
  Levels stop at 1 x 1. A normalized grid is mapped to each level by the affine map that keeps these pixel
  footprints (:func:`level_grid_map`).
* Footprint: the spacing between neighbouring output locations, in input pixels, by central differences of the
  grid (one-sided at the edges): ``rho = max(|dp/du|, |dp/dv|)``, the larger of the two axes, as OpenGL's
  mipmap level of detail (no under-filtering along the more compressed axis, at the price of over-blurring
  the other).
* Level ``lambda = clamp(log2(rho), 0, L - 1)``; the two nearest levels are blended linearly
  (trilinear mipmapping): weight ``max(0, 1 - |lambda - l|)`` for level l.
* The level selection is treated as a constant in the backward (the gradient w.r.t. ``grid`` flows through the
  bilinear samples of the two levels, not through the footprint), as in mipmapped differentiable renderers.

Deterministic, and made of standard ONNX operators (Pad, AveragePool, Mul, Add, GridSample, Log, Relu, ...).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from training.sampling.tracing import constant, static_sizes


def pyramid_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """(H, W) of every pyramid level: halved (rounded up) until 1 x 1; level 0 is (height, width)."""
    sizes = [(height, width)]
    while max(sizes[-1]) > 1:
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


def build_pyramid(image: torch.Tensor) -> list[torch.Tensor]:
    """The mipmap of (N, C, H, W): level l has size ``pyramid_sizes(H, W)[l]``.

    Returns:
        List of (N, C, H_l, W_l) tensors, level 0 first (the input itself).
    """
    levels = [image]
    for h, w in pyramid_sizes(*static_sizes(image, (2, 3)))[:-1]:
        level = levels[-1]
        if h % 2 or w % 2:
            level = F.pad(level, (0, w % 2, 0, h % 2), mode="replicate")
        levels.append(F.avg_pool2d(level, kernel_size=2, stride=2))
    return levels


def level_grid_map(size: int, level_size: int, level: int, align_corners: bool) -> tuple[float, float]:
    """The affine map ``x_l = a x + b`` from a normalized coordinate of the input to the same point on a
    level.

    Args:
        size: the input's size along the axis (pixels).
        level_size: the level's size along the axis.
        level: the level index l (a level pixel covers 2^l input pixels).
        align_corners: as in ``grid_sample``.

    Returns:
        ``(a, b)``.
    """
    factor = 2.0**level
    if not align_corners:
        a = size / (factor * level_size)
        return a, a - 1.0
    if level_size == 1:
        return 1.0, 0.0
    a = (size - 1) / (factor * (level_size - 1))
    return a, a + (1.0 / factor - 1.0) / (level_size - 1) - 1.0


def _central_difference(points: torch.Tensor, dim: int) -> torch.Tensor:
    """Central differences of (N, H_out, W_out, 2) along ``dim`` (1 or 2); one-sided at the ends."""
    (length,) = static_sizes(points, (dim,))
    if length < 2:
        return torch.zeros_like(points)
    forward = points.narrow(dim, 1, length - 1) - points.narrow(dim, 0, length - 1)
    padded = torch.cat((forward.narrow(dim, 0, 1), forward, forward.narrow(dim, length - 2, 1)), dim=dim)
    return 0.5 * (padded.narrow(dim, 0, length) + padded.narrow(dim, 1, length))


def footprint_level(
    grid: torch.Tensor, in_size: tuple[int, int], align_corners: bool, max_level: int
) -> torch.Tensor:
    """Continuous pyramid level per output location, from the grid's spacing (no gradient).

    Args:
        grid: (N, H_out, W_out, 2), normalized [-1, 1], x then y.
        in_size: (H_in, W_in), pixels.
        align_corners: as in ``grid_sample`` (pixels per normalized unit: (W_in - 1) / 2 or W_in / 2).
        max_level: the coarsest level index, L - 1.

    Returns:
        (N, 1, H_out, W_out) level in [0, max_level]: ``log2`` of the larger spacing in input pixels.
    """
    h_in, w_in = in_size
    shrink = 1 if align_corners else 0
    pixels_per_unit = constant([max(w_in - shrink, 1) / 2.0, max(h_in - shrink, 1) / 2.0], like=grid)
    points = grid.detach() * pixels_per_unit
    spacing_sq = torch.maximum(
        _central_difference(points, 2).square().sum(-1), _central_difference(points, 1).square().sum(-1)
    )
    level = torch.log(spacing_sq.clamp(min=1.0)) * (0.5 / math.log(2.0))
    return level.clamp(max=float(max_level)).unsqueeze(1)


def multiscale_grid_sample(
    input: torch.Tensor,
    grid: torch.Tensor,
    padding_mode: str = "zeros",
    align_corners: bool = False,
) -> torch.Tensor:
    """Multi-scale sampling: per output location, blend the bilinear samples of the two pyramid levels nearest
    to the grid's footprint (arguments already validated).

    Args:
        input: (N, C, H_in, W_in).
        grid: (N, H_out, W_out, 2), normalized [-1, 1], x then y.
        padding_mode: "zeros", "border" or "reflection", applied by each level's bilinear sampling.
        align_corners: as in ``grid_sample``.

    Returns:
        (N, C, H_out, W_out), the input's dtype.
    """
    h_in, w_in = static_sizes(input, (2, 3))
    levels = build_pyramid(input)
    level = footprint_level(grid, (h_in, w_in), align_corners, len(levels) - 1)
    exporting = torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()
    output = torch.zeros((), dtype=input.dtype, device=input.device)
    for index, image in enumerate(levels):
        weight = torch.relu(1.0 - (level - float(index)).abs())
        if not exporting and index > 0 and not bool((weight > 0).any()):
            continue  # no location uses this level (a shortcut only: the result is the same)
        level_grid = grid
        if index > 0:
            h_level, w_level = static_sizes(image, (2, 3))
            ax, bx = level_grid_map(w_in, w_level, index, align_corners)
            ay, by = level_grid_map(h_in, h_level, index, align_corners)
            level_grid = torch.addcmul(constant([bx, by], like=grid), grid, constant([ax, ay], like=grid))
        sample = F.grid_sample(
            image, level_grid, mode="bilinear", padding_mode=padding_mode, align_corners=align_corners
        )
        output = output + sample * weight
    return output
