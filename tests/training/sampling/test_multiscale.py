"""The multi-scale (mipmap) baseline: pyramid geometry, level selection, and its limits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from training.sampling import grid_sample
from training.sampling.multiscale import build_pyramid, footprint_level, level_grid_map, pyramid_sizes


def identity_grid(
    n: int, h: int, w: int, align_corners: bool, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    theta = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=dtype).expand(n, 2, 3)
    return F.affine_grid(theta, [n, 1, h, w], align_corners=align_corners)


def test_pyramid_sizes_halve_rounding_up() -> None:
    assert pyramid_sizes(50, 50) == [(50, 50), (25, 25), (13, 13), (7, 7), (4, 4), (2, 2), (1, 1)]
    assert pyramid_sizes(5, 2) == [(5, 2), (3, 1), (2, 1), (1, 1)]


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("size", [16, 13])
def test_each_level_is_block_averages_at_the_right_place(align_corners: bool, size: int) -> None:
    x = torch.rand(2, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    levels = build_pyramid(x)
    padded = F.pad(x, (0, 16 - size, 0, 16 - size), mode="replicate")  # blocks beyond the border repeat it
    for index, level in enumerate(levels[1:], start=1):
        block = 2**index
        blocks = F.avg_pool2d(padded, block, block)[..., : level.shape[2], : level.shape[3]]
        torch.testing.assert_close(level, blocks)
        # Level pixel (i, j) covers input pixels [2^l i, 2^l (i + 1)): its centre, in input normalized
        # coordinates, must land on that level pixel's centre after the level's grid map.
        n_l = level.shape[3]
        centre_px = block * (torch.arange(n_l, dtype=torch.float64) + 0.5) - 0.5  # in input pixel indices
        norm = 2 * centre_px / (size - 1) - 1 if align_corners else (2 * centre_px + 1) / size - 1
        a, b = level_grid_map(size, n_l, index, align_corners)
        ys, xs = torch.meshgrid(a * norm + b, a * norm + b, indexing="ij")
        grid = torch.stack((xs, ys), dim=-1).expand(2, n_l, n_l, 2)
        sampled = F.grid_sample(level, grid, "bilinear", "border", align_corners=align_corners)
        torch.testing.assert_close(sampled, level)


@pytest.mark.parametrize("align_corners", [False, True])
def test_no_minification_is_exact_bilinear(align_corners: bool) -> None:
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    grid = identity_grid(2, 20, 20, align_corners) * 0.9  # spacing below one input pixel
    level = footprint_level(grid, (12, 12), align_corners, max_level=4)
    assert torch.equal(level, torch.zeros_like(level))
    expected = F.grid_sample(x, grid, "bilinear", "zeros", align_corners)
    torch.testing.assert_close(grid_sample(x, grid, "multiscale", align_corners=align_corners), expected)


def test_footprint_follows_the_larger_spacing() -> None:
    # Output pixels 4 input pixels apart along x, 2 along y: level log2(4) = 2 everywhere.
    theta = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype=torch.float64)
    grid = F.affine_grid(theta, [1, 1, 16, 8], align_corners=False)  # 32x32 input -> 8 wide, 16 tall
    level = footprint_level(grid, (32, 32), align_corners=False, max_level=5)
    torch.testing.assert_close(level, torch.full_like(level, 2.0))


def test_exact_halving_samples_level_one() -> None:
    x = torch.rand(1, 2, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    grid = identity_grid(1, 16, 16, align_corners=False)  # spacing 2 pixels: level 1
    out = grid_sample(x, grid, "multiscale")
    torch.testing.assert_close(out, F.avg_pool2d(x, 2, 2))


def test_gradients_are_finite_and_deterministic() -> None:
    x = torch.rand(2, 3, 50, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    grads = []
    for _ in range(2):
        xi = x.clone().requires_grad_(True)
        grid = (identity_grid(2, 5, 5, align_corners=False) * 0.72).requires_grad_(True)
        grid_sample(xi, grid, "multiscale", "reflection").square().sum().backward()
        assert xi.grad is not None and grid.grad is not None
        assert torch.isfinite(grid.grad).all() and grid.grad.abs().sum() > 0
        grads.append(grid.grad)
    assert torch.equal(grads[0], grads[1])
