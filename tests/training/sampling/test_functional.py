"""The drop-in ``grid_sample``: torch's own modes unchanged, and clear errors for bad arguments."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from training.errors import ConfigError, ShapeError, TrainingError
from training.sampling import SAMPLING_MODES, grid_sample


def _inputs(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 9, 11, generator=gen, dtype=dtype)
    grid = (torch.rand(2, 4, 5, 2, generator=gen, dtype=dtype) * 2.4 - 1.2).to(dtype)
    return x, grid


@pytest.mark.parametrize(
    ("mode", "padding_mode", "align_corners"),
    itertools.product(("bilinear", "nearest", "bicubic"), ("zeros", "border", "reflection"), (False, True)),
)
def test_torch_modes_are_torch_grid_sample(mode: str, padding_mode: str, align_corners: bool) -> None:
    x, grid = _inputs(torch.float64)
    x.requires_grad_(True)
    ours = grid_sample(x, grid, mode, padding_mode, align_corners)
    theirs = F.grid_sample(x, grid, mode, padding_mode, align_corners)
    assert torch.equal(ours, theirs)


def test_every_mode_runs_and_keeps_shape_dtype_and_input() -> None:
    x, grid = _inputs()
    before = x.clone()
    for mode in SAMPLING_MODES:
        out = grid_sample(x, grid, mode)
        assert out.shape == (2, 3, 4, 5) and out.dtype == x.dtype
    assert torch.equal(x, before)


BAD_SHAPES = [
    (torch.rand(3, 9, 9), torch.rand(1, 4, 4, 2), "input must be 4-D"),
    (torch.rand(1, 1, 3, 9, 9), torch.rand(1, 4, 4, 2), "input must be 4-D"),
    (torch.rand(1, 3, 9, 9), torch.rand(1, 4, 4, 3), "grid must have shape (N, H_out, W_out, 2)"),
    (torch.rand(1, 3, 9, 9), torch.rand(4, 4, 2), "grid must have shape (N, H_out, W_out, 2)"),
    (torch.rand(2, 3, 9, 9), torch.rand(3, 4, 4, 2), "expected 2, got 3"),
    (torch.rand(1, 3, 0, 9), torch.rand(1, 4, 4, 2), "non-empty"),
    (
        torch.rand(1, 3, 9, 9),
        torch.rand(1, 4, 4, 2, dtype=torch.float64),
        "expected torch.float32, got torch.float64",
    ),
    (torch.ones(1, 3, 9, 9, dtype=torch.int64), torch.rand(1, 4, 4, 2), "floating-point"),
    (torch.rand(1, 3, 9, 9), torch.rand(1, 4, 4, 2, device="meta"), "expected cpu, got meta"),
]


@pytest.mark.parametrize("mode", SAMPLING_MODES)
@pytest.mark.parametrize(("x", "grid", "message"), BAD_SHAPES)
def test_bad_tensors_raise_shape_error(mode: str, x: torch.Tensor, grid: torch.Tensor, message: str) -> None:
    with pytest.raises(ShapeError) as info:
        grid_sample(x, grid, mode)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, TrainingError)


def test_bad_options_raise_config_error() -> None:
    x, grid = _inputs()
    with pytest.raises(ConfigError, match="mode must be one of"):
        grid_sample(x, grid, "area")
    with pytest.raises(ConfigError, match="padding_mode"):
        grid_sample(x, grid, "linearized", "wrap")
    with pytest.raises(ConfigError, match="num_samples must be an int >= 4"):
        grid_sample(x, grid, "linearized", num_samples=3)
    with pytest.raises(ConfigError, match="offset_std"):
        grid_sample(x, grid, "linearized", offset_std=-1.0)
    with pytest.raises(ConfigError, match="push_std"):
        grid_sample(x, grid, "linearized", push_std=float("nan"))
    with pytest.raises(ConfigError, match=r"generator must be a torch\.Generator"):
        grid_sample(x, grid, "linearized", generator=0)  # type: ignore[arg-type]
