"""``SamplerOptions`` (validated once) and the one dispatch point: every mode and eval forward, "expected"
included, through ``grid_sample``, ``GridSampler`` and ``dispatch.sample``; backend selection."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from training.errors import ConfigError
from training.sampling import GridSampler, expected_linearized_sample, grid_sample
from training.sampling.dispatch import sample
from training.sampling.linearized import select_backend
from training.sampling.options import BACKENDS, FORWARDS, SamplerOptions


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 12, 13, generator=gen)
    grid = torch.rand(2, 5, 6, 2, generator=gen) * 2.2 - 1.1
    return x, grid


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mode": "area"}, "mode must be one of"),
        ({"padding_mode": "wrap"}, "padding_mode must be one of"),
        ({"eval_forward": "mean"}, "eval_forward must be one of"),
        ({"backend": "cuda"}, "backend must be one of"),
        ({"num_samples": 3}, "num_samples must be an int >= 4"),
        ({"num_samples": 8.0}, "num_samples must be an int >= 4"),
        ({"num_samples": True}, "num_samples must be an int >= 4"),
        ({"offset_std": -0.1}, "offset_std must be a finite number >= 0"),
        ({"push_std": float("inf")}, "push_std must be a finite number >= 0"),
        ({"align_corners": 1}, "align_corners must be a bool"),
        ({"exact_forward": "yes"}, "exact_forward must be a bool"),
    ],
)
def test_invalid_options_raise_config_error_on_construction(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SamplerOptions(**changes)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=message):
        SamplerOptions().replace(**changes)


def test_options_are_frozen_and_name_the_forward() -> None:
    options = SamplerOptions("linearized", eval_forward="expected")
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.mode = "bilinear"  # type: ignore[misc]
    assert options.forward(training=True) == "linearized"
    assert options.forward(training=False) == "expected"
    assert SamplerOptions("multiscale", eval_forward="expected").forward(training=False) == "multiscale"
    assert set(FORWARDS) == {"bilinear", "nearest", "bicubic", "linearized", "multiscale", "expected"}
    assert BACKENDS[0] == "auto"


def test_expected_is_a_mode_of_grid_sample_and_of_the_module() -> None:
    x, grid = _inputs()
    expected = expected_linearized_sample(x, grid, "border", num_samples=6)
    assert torch.equal(grid_sample(x, grid, "expected", "border", num_samples=6), expected)
    options = SamplerOptions("linearized", "border", num_samples=6, eval_forward="expected")
    assert torch.equal(sample(x, grid, options, forward="expected"), expected)
    module = GridSampler(options=options).eval()
    assert module.inference_forward == "expected" and torch.equal(module(x, grid), expected)
    # "expected" as the training mode is deterministic too.
    assert torch.equal(GridSampler("expected", "border", num_samples=6)(x, grid), expected)


@pytest.mark.parametrize("forward", ["bilinear", "nearest", "bicubic"])
def test_torch_forwards_through_the_dispatch(forward: str) -> None:
    x, grid = _inputs()
    out = sample(x, grid, SamplerOptions("linearized", "reflection", True), forward=forward)
    assert torch.equal(out, F.grid_sample(x, grid, forward, "reflection", align_corners=True))


def test_unknown_forward_raises() -> None:
    x, grid = _inputs()
    with pytest.raises(ConfigError, match="mode must be one of"):
        sample(x, grid, SamplerOptions(), forward="trilinear")


def test_backend_selection_and_forced_unavailable_backends() -> None:
    x, _ = _inputs()
    assert select_backend(SamplerOptions(backend="torch"), x) == "torch"
    assert select_backend(SamplerOptions(), x.half()) == "torch"  # the CPU kernel takes float32/float64 only
    with pytest.raises(ConfigError, match="backend 'cpu' takes CPU float32/float64"):
        select_backend(SamplerOptions(backend="cpu"), x.half())
    with pytest.raises(ConfigError, match="backend 'triton' takes CUDA tensors"):
        select_backend(SamplerOptions(backend="triton"), x)  # no TRITON_INTERPRET in the default run


def test_module_keeps_its_options_and_repr() -> None:
    module = GridSampler("linearized", "zeros", eval_forward="expected", num_samples=6)
    assert module.options == SamplerOptions("linearized", "zeros", eval_forward="expected", num_samples=6)
    assert "inference_forward='expected'" in repr(module) and "num_samples=6" in repr(module)
