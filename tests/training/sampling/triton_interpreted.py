"""The Triton kernels on CPU tensors in Triton's interpreter: run by test_triton.py in a subprocess with
``TRITON_INTERPRET=1`` (which must be set before triton is imported); skipped when run any other way.

The kernels draw their offsets with Philox (the seed contract of training/sampling/triton_kernel.py);
``triton_kernel.offsets`` materializes the same offsets, and the PyTorch path is run on them
(``linearized_fit(..., offsets=z)``). Value, slope, the grid gradient (the second kernel) and the input
gradient must then equal the PyTorch path's. Sizes are tiny and K = 4 where possible: the interpreter runs
each kernel as numpy operations, about a second per launch.
"""

from __future__ import annotations

import itertools
import os

import pytest
import torch
import torch.nn.functional as F

from training.sampling import grid_sample, triton_kernel
from training.sampling.linearized import grid_gradient, linearized_fit
from training.sampling.options import SamplerOptions

pytestmark = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1" or not triton_kernel.importable(),
    reason="run by test_triton.py with TRITON_INTERPRET=1 and triton installed",
)

N, C, H_IN, W_IN, H_OUT, W_OUT = 2, 3, 9, 11, 4, 5


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def inputs(
    dtype: torch.dtype = torch.float64, align_corners: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H_IN, W_IN) in [0, 1) and a (N, H_OUT, W_OUT, 2) grid that reaches outside the image."""
    x = torch.rand(N, C, H_IN, W_IN, generator=seeded(0), dtype=torch.float64)
    theta = torch.tensor([[[0.9, 0.3, 0.2], [-0.3, 0.9, -0.1]], [[1.1, -0.2, -0.3], [0.2, 1.0, 0.25]]])
    grid = F.affine_grid(theta.double(), [N, C, H_OUT, W_OUT], align_corners=align_corners)
    return x.to(dtype), grid.to(dtype)


@pytest.fixture(scope="module")
def offsets() -> tuple[torch.Tensor, torch.Tensor]:
    """A seed and the K = 4 offsets (3, 2, N, H_OUT, W_OUT) the kernel draws with it."""
    seed = triton_kernel.draw_seed(seeded(1), torch.device("cpu"))
    return seed, triton_kernel.offsets(seed, 3, N, H_OUT, W_OUT)


@pytest.mark.parametrize(
    ("padding_mode", "align_corners"), itertools.product(("zeros", "border", "reflection"), (False, True))
)
def test_value_slope_and_grid_gradient_equal_the_pytorch_path(
    padding_mode: str, align_corners: bool, offsets: tuple[torch.Tensor, torch.Tensor]
) -> None:
    seed, z = offsets
    x, grid = inputs(torch.float64, align_corners)
    options = SamplerOptions("linearized", padding_mode, align_corners, num_samples=4, backend="triton")
    spread = options.spread((H_IN, W_IN), (H_OUT, W_OUT))
    value, slope = triton_kernel.fit(x, grid, options, spread, None, seed=seed)
    ref_value, ref_slope = linearized_fit(x, grid, options, None, backend="torch", offsets=z.double())
    assert value is not None and ref_value is not None
    torch.testing.assert_close(value, ref_value, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(slope, ref_slope, rtol=1e-9, atol=1e-9)
    grad_output = torch.randn(N, C, H_OUT, W_OUT, generator=seeded(2), dtype=torch.float64)
    torch.testing.assert_close(
        grid_gradient(grad_output, slope, "triton"), grid_gradient(grad_output, ref_slope, "torch")
    )


def test_autograd_non_contiguous_float32_equals_the_pytorch_path(
    offsets: tuple[torch.Tensor, torch.Tensor],
) -> None:
    """Through ``grid_sample``: non-contiguous input, grid and grad_output; value and both gradients."""
    _, z = offsets
    x, grid = inputs(torch.float32)
    x_nc = x.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)  # same values, other strides
    grid_nc = grid.transpose(1, 2).contiguous().transpose(1, 2)
    assert not x_nc.is_contiguous() and not grid_nc.is_contiguous()
    xi, gi = x_nc.clone().requires_grad_(True), grid_nc.clone().requires_grad_(True)
    out = grid_sample(xi, gi, "linearized", "border", num_samples=4, generator=seeded(1), backend="triton")
    grad_output = torch.randn(N, W_OUT, H_OUT, C, generator=seeded(3)).permute(0, 3, 2, 1)
    out.backward(grad_output)
    options = SamplerOptions("linearized", "border", num_samples=4, backend="torch")
    ref_value, ref_slope = linearized_fit(x, grid, options, None, offsets=z)
    assert ref_value is not None and xi.grad is not None and gi.grad is not None
    # float32 rounding, amplified where 3 auxiliary points are nearly collinear (K = 4).
    torch.testing.assert_close(out.detach(), ref_value, rtol=1e-4, atol=1e-4)
    ref_grad = grid_gradient(grad_output, ref_slope)
    torch.testing.assert_close(gi.grad, ref_grad, rtol=1e-3, atol=1e-3 * float(ref_grad.abs().max()))
    xb = x.clone().requires_grad_(True)
    F.grid_sample(xb, grid, "bilinear", "border", align_corners=False).backward(grad_output)
    torch.testing.assert_close(xi.grad, xb.grad)


def test_exact_forward_is_bilinear_and_keeps_the_slope() -> None:
    x, grid = inputs(torch.float32)
    gi = grid.clone().requires_grad_(True)
    out = grid_sample(
        x, gi, "linearized", exact_forward=True, num_samples=4, generator=seeded(1), backend="triton"
    )
    assert torch.equal(out, F.grid_sample(x, grid, align_corners=False))
    out.sum().backward()
    assert gi.grad is not None and torch.isfinite(gi.grad).all() and gi.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_accumulates_in_float32(
    dtype: torch.dtype, offsets: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """Half inputs, float32 sums: equal to the float32 PyTorch path on the same (rounded) inputs and offsets,
    up to the rounding of the auxiliary coordinates (which this kernel keeps in float32)."""
    _, z = offsets
    x, grid = inputs(dtype)
    gi = grid.clone().requires_grad_(True)
    out = grid_sample(x, gi, "linearized", num_samples=4, generator=seeded(1), backend="triton")
    assert out.dtype == dtype
    out.float().sum().backward()
    assert gi.grad is not None and gi.grad.dtype == dtype
    options = SamplerOptions("linearized", num_samples=4, backend="torch")
    ref_value, ref_slope = linearized_fit(x.float(), grid.float(), options, None, offsets=z)
    assert ref_value is not None
    torch.testing.assert_close(out.float(), ref_value, rtol=0, atol=2e-2)
    ref_grad = grid_gradient(torch.ones(N, C, H_OUT, W_OUT), ref_slope)
    cosine = F.cosine_similarity(gi.grad.float().flatten(), ref_grad.flatten(), dim=0)
    assert cosine > 0.99


def test_empty_batch_and_no_channels() -> None:
    for shape in ((0, 3, 8, 8), (2, 0, 8, 8)):
        x = torch.rand(shape)
        grid = torch.zeros(shape[0], 4, 4, 2, requires_grad=True)
        out = grid_sample(x, grid, "linearized", backend="triton")
        assert out.shape == (shape[0], shape[1], 4, 4)
        out.sum().backward()
        assert grid.grad is not None and torch.equal(grid.grad, torch.zeros_like(grid))


def test_seed_contract_generator_reproducible() -> None:
    seed_a = triton_kernel.draw_seed(seeded(5), torch.device("cpu"))
    seed_b = triton_kernel.draw_seed(seeded(5), torch.device("cpu"))
    assert int(seed_a) == int(seed_b)
    z = triton_kernel.offsets(seed_a, 3, 1, 8, 8)
    # Standard normal: 3 * 2 * 64 = 384 numbers, mean and std within a few standard errors.
    assert abs(float(z.mean())) < 0.2 and abs(float(z.std()) - 1.0) < 0.15
