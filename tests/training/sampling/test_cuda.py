"""The samplers on CUDA (the pure PyTorch path): same results as on CPU; half precision. Skipped without
CUDA."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.training.sampling.reference import reference_linearized_grid_sample
from training.errors import ShapeError
from training.sampling import expected_linearized_sample, grid_sample

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _inputs(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 50, 50, generator=gen)
    theta = torch.tensor([[0.5, 0.1, 0.05], [-0.1, 0.5, 0.0]]).expand(4, 2, 3)
    grid = F.affine_grid(theta, [4, 3, 9, 9], align_corners=False)
    return x.to("cuda", dtype), grid.to("cuda", dtype)


@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
def test_exact_forward_equals_bilinear_on_cuda(padding_mode: str) -> None:
    x, grid = _inputs()
    grid.requires_grad_(True)
    out = grid_sample(x, grid, "linearized", padding_mode, exact_forward=True)
    assert torch.equal(out, F.grid_sample(x, grid.detach(), "bilinear", padding_mode, align_corners=False))


def test_cuda_matches_straightforward_formulation() -> None:
    x, grid = _inputs(torch.float64)
    results = []
    for fn in ("ours", "reference"):
        gi = grid.clone().requires_grad_(True)
        gen = torch.Generator(device="cuda").manual_seed(3)
        if fn == "ours":
            out = grid_sample(x, gi, "linearized", generator=gen)
        else:
            out = reference_linearized_grid_sample(x, gi, generator=gen)
        out.square().sum().backward()
        results.append((out.detach(), gi.grad))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_on_cuda(dtype: torch.dtype) -> None:
    x, grid = _inputs(dtype)
    grid.requires_grad_(True)
    out = grid_sample(x, grid, "linearized", generator=torch.Generator(device="cuda").manual_seed(1))
    assert out.dtype == dtype
    out.float().square().sum().backward()
    assert grid.grad is not None and grid.grad.dtype == dtype and torch.isfinite(grid.grad.float()).all()


def test_cpu_generator_with_cuda_input_is_an_error() -> None:
    x, grid = _inputs()
    with pytest.raises(ShapeError, match="expected cuda, got cpu"):
        grid_sample(x, grid, "linearized", generator=torch.Generator())


@pytest.mark.parametrize("mode", ["expected", "multiscale"])
def test_deterministic_forwards_match_cpu(mode: str) -> None:
    x, grid = _inputs()
    if mode == "expected":
        cuda, cpu = expected_linearized_sample(x, grid), expected_linearized_sample(x.cpu(), grid.cpu())
    else:
        cuda, cpu = grid_sample(x, grid, "multiscale"), grid_sample(x.cpu(), grid.cpu(), "multiscale")
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-4, atol=1e-5)
