"""The samplers on CUDA: the PyTorch path equals the CPU and the reference; the Triton kernel equals the
PyTorch path given the same offsets; half precision; memory. Skipped without CUDA (benchmarks/gpu_check.sh
runs them on a lent GPU)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from training.errors import ShapeError
from training.sampling import expected_linearized_sample, grid_sample, triton_kernel
from training.sampling.linearized import grid_gradient, linearized_fit, select_backend
from training.sampling.options import SamplerOptions
from training.sampling.reference import reference_linearized_grid_sample

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
            out = grid_sample(x, gi, "linearized", generator=gen, backend="torch")
        else:
            out = reference_linearized_grid_sample(x, gi, None, gen)
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


# The fused Triton kernel (selected automatically for CUDA tensors when triton is importable).

needs_triton = pytest.mark.skipif(not triton_kernel.importable(), reason="triton is not installed")


@needs_triton
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_triton_equals_the_pytorch_path_given_the_same_offsets(
    padding_mode: str, align_corners: bool
) -> None:
    x, grid = _inputs(torch.float64)
    options = SamplerOptions("linearized", padding_mode, align_corners, backend="triton")
    assert select_backend(SamplerOptions(), x.float()) == "triton"
    spread = options.spread((50, 50), (9, 9))
    seed = triton_kernel.draw_seed(torch.Generator(device="cuda").manual_seed(0), x.device)
    value, slope = triton_kernel.fit(x, grid, options, spread, None, seed=seed)
    z = triton_kernel.offsets(seed, options.num_aux, 4, 9, 9).double()
    ref_value, ref_slope = linearized_fit(x, grid, options, None, backend="torch", offsets=z)
    assert value is not None and ref_value is not None
    torch.testing.assert_close(value, ref_value, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(slope, ref_slope, rtol=1e-8, atol=1e-8)
    grad_output = torch.randn_like(ref_value)
    torch.testing.assert_close(
        grid_gradient(grad_output, slope, "triton"), grid_gradient(grad_output, ref_slope)
    )


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_triton_autograd_and_dtypes(dtype: torch.dtype) -> None:
    x, grid = _inputs(dtype)
    xi, gi = x.clone().requires_grad_(True), grid.clone().requires_grad_(True)
    out = grid_sample(xi, gi, "linearized", generator=torch.Generator(device="cuda").manual_seed(1))
    assert out.dtype == dtype
    out.float().square().sum().backward()
    assert gi.grad is not None and gi.grad.dtype == dtype and torch.isfinite(gi.grad.float()).all()
    xb = x.clone().requires_grad_(True)
    F.grid_sample(xb, grid, align_corners=False).backward(2 * out.detach())
    torch.testing.assert_close(xi.grad, xb.grad)  # the input gradient is bilinear's


@needs_triton
def test_triton_seed_contract_and_manual_seed() -> None:
    x, grid = _inputs()
    torch.manual_seed(7)
    first = grid_sample(x, grid, "linearized")
    torch.manual_seed(7)
    assert torch.equal(first, grid_sample(x, grid, "linearized"))
    gen = torch.Generator(device="cuda").manual_seed(7)
    assert not torch.equal(first, grid_sample(x, grid, "linearized", generator=gen))


@needs_triton
def test_triton_extra_memory_is_at_most_input_plus_output() -> None:
    x, grid = _inputs()
    x = x.repeat(32, 1, 1, 1).requires_grad_(True)
    grid = grid.repeat(32, 1, 1, 1).requires_grad_(True)
    budget = 4 * (x.numel() + x.shape[0] * x.shape[1] * 81)
    peaks = []
    for fn in (
        lambda: F.grid_sample(x, grid, align_corners=False),
        lambda: grid_sample(x, grid, "linearized"),
    ):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn().sum().backward()
        torch.cuda.synchronize()
        peaks.append(torch.cuda.max_memory_allocated() - before)
        x.grad = grid.grad = None
    assert peaks[1] - peaks[0] <= budget, peaks
