"""Linearized multi-sampling: forward and gradients against torch bilinear, linear ramps and the
straightforward (materialized) formulation; determinism; robustness on degenerate inputs."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from training.sampling import cpu_kernel, grid_sample
from training.sampling.offsets import offset_spread
from training.sampling.options import SamplerOptions
from training.sampling.reference import reference_linearized_grid_sample

PADDINGS = ("zeros", "border", "reflection")
DTYPES = (torch.float32, torch.float64)
CPU_BACKENDS = (
    "torch",
    pytest.param(
        "cpu",
        marks=pytest.mark.skipif(
            not cpu_kernel.available(), reason=f"no fused CPU kernel: {cpu_kernel.status()}"
        ),
    ),
)


def similarity_grid(
    n: int, size: int, *, dtype: torch.dtype = torch.float32, align_corners: bool = False, seed: int = 0
) -> torch.Tensor:
    """(n, size, size, 2) grids of random similarity warps that reach partly outside the input."""
    gen = torch.Generator().manual_seed(seed)
    angle = (torch.rand(n, generator=gen, dtype=torch.float64) - 0.5) * 1.2
    scale = 0.6 + 0.5 * torch.rand(n, generator=gen, dtype=torch.float64)
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = scale * torch.cos(angle)
    theta[:, 0, 1] = -scale * torch.sin(angle)
    theta[:, 1, 0] = scale * torch.sin(angle)
    theta[:, 1, 1] = scale * torch.cos(angle)
    theta[:, :, 2] = (torch.rand(n, 2, generator=gen, dtype=torch.float64) - 0.5) * 0.8
    return F.affine_grid(theta, [n, 1, size, size], align_corners=align_corners).to(dtype)


def ramp_image(a: float, b: float, c: float, size: int, channels: int = 2) -> torch.Tensor:
    """(1, channels, size, size) float64 image I = a x + b y + c (x, y in pixels), channel k times k + 1."""
    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64), indexing="ij"
    )
    ramp = a * xs + b * ys + c
    return torch.stack([ramp * (k + 1) for k in range(channels)]).unsqueeze(0)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    ("padding_mode", "align_corners", "dtype"), itertools.product(PADDINGS, (False, True), DTYPES)
)
def test_exact_forward_is_bitwise_bilinear(
    padding_mode: str, align_corners: bool, dtype: torch.dtype
) -> None:
    x = torch.rand(3, 2, 11, 13, dtype=dtype, generator=seeded())
    grid = similarity_grid(3, 5, dtype=dtype, align_corners=align_corners).requires_grad_(True)
    out = grid_sample(
        x, grid, "linearized", padding_mode, align_corners, exact_forward=True, generator=seeded(1)
    )
    expected = F.grid_sample(x, grid.detach(), "bilinear", padding_mode, align_corners)
    assert out.dtype == dtype
    assert torch.equal(out, expected)


def test_exact_forward_non_contiguous_and_empty_batch() -> None:
    base = torch.rand(2, 13, 11, 3, generator=seeded())
    x = base.permute(0, 3, 2, 1)  # (2, 3, 11, 13), non-contiguous
    grid = similarity_grid(2, 6).transpose(1, 2).requires_grad_(True)  # non-contiguous grid
    assert not x.is_contiguous() and not grid.is_contiguous()
    out = grid_sample(x, grid, "linearized", exact_forward=True, generator=seeded(1))
    assert torch.equal(out, F.grid_sample(x, grid.detach(), align_corners=False))
    out.sum().backward()
    assert grid.grad is not None and torch.isfinite(grid.grad).all()

    empty_x = torch.rand(0, 3, 8, 8)
    empty_grid = torch.zeros(0, 4, 4, 2, requires_grad=True)
    for exact in (False, True):
        empty = grid_sample(empty_x, empty_grid, "linearized", exact_forward=exact)
        assert empty.shape == (0, 3, 4, 4)
        empty.sum().backward()


@pytest.mark.parametrize("exact_forward", [False, True])
@pytest.mark.parametrize("padding_mode", PADDINGS)
def test_input_gradient_equals_bilinear(exact_forward: bool, padding_mode: str) -> None:
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64, generator=seeded()).requires_grad_(True)
    grid = similarity_grid(2, 7, dtype=torch.float64).requires_grad_(True)
    weight = torch.randn(2, 3, 7, 7, dtype=torch.float64, generator=seeded(2))
    out = grid_sample(x, grid, "linearized", padding_mode, exact_forward=exact_forward, generator=seeded(1))
    (grad_lin,) = torch.autograd.grad((out * weight).sum(), x)
    ref = F.grid_sample(x, grid, "bilinear", padding_mode, align_corners=False)
    (grad_bil,) = torch.autograd.grad((ref * weight).sum(), x)
    torch.testing.assert_close(grad_lin, grad_bil, rtol=0, atol=1e-12)


def test_gradcheck_input_gradient_float64() -> None:
    x = torch.rand(1, 2, 6, 7, dtype=torch.float64, generator=seeded()).requires_grad_(True)
    grid = similarity_grid(1, 4, dtype=torch.float64)
    for padding_mode in PADDINGS:
        # exact_forward: the forward is the centre's bilinear sample, so the input gradient is its true one.
        def sample(image: torch.Tensor, padding: str = padding_mode) -> torch.Tensor:
            return grid_sample(image, grid, "linearized", padding, exact_forward=True, generator=seeded(3))

        assert torch.autograd.gradcheck(sample, (x,), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("align_corners", [False, True])
def test_linear_ramp_forward_equals_bilinear(align_corners: bool) -> None:
    image = ramp_image(0.7, -1.3, 5.0, 40)
    # Interior sampling points: every auxiliary point (std about 1.4 input pixels here) stays inside.
    grid = similarity_grid(1, 8, dtype=torch.float64, align_corners=align_corners) * 0.5
    out = grid_sample(image, grid, "linearized", align_corners=align_corners, generator=seeded(5))
    expected = F.grid_sample(image, grid, "bilinear", align_corners=align_corners)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    ("offset_std", "push_std", "num_samples"), [(None, None, 8), (0.1, 0.3, 4), (0.5, 1.5, 16), (0.0, 0.5, 8)]
)
@pytest.mark.parametrize("align_corners", [False, True])
def test_linear_ramp_grid_gradient_is_the_slope(
    offset_std: float | None, push_std: float | None, num_samples: int, align_corners: bool
) -> None:
    a, b, size = 0.7, -1.3, 60
    image = ramp_image(a, b, 5.0, size, channels=2)
    # Sampling points at least 21 pixels inside; the largest offset spread here is 3.4 pixels.
    grid = similarity_grid(2, 10, dtype=torch.float64, align_corners=align_corners) * 0.3
    grid.requires_grad_(True)
    out = grid_sample(
        image.expand(2, -1, -1, -1),
        grid,
        "linearized",
        align_corners=align_corners,
        num_samples=num_samples,
        offset_std=offset_std,
        push_std=push_std,
        generator=seeded(7),
    )
    weight = torch.tensor([1.0, 0.75], dtype=torch.float64).view(1, 2, 1, 1)
    (out * weight).sum().backward()
    # dI/dx in normalized units is a times the pixels per normalized unit; channel k is (k + 1) I, so the
    # grid gradient of sum_k w_k I_k is (a, b) * pixels_per_unit * (1 * 1 + 0.75 * 2) at every location.
    pixels_per_unit = (size - 1) / 2 if align_corners else size / 2
    expected = torch.tensor([a, b], dtype=torch.float64) * pixels_per_unit * 2.5
    assert grid.grad is not None
    torch.testing.assert_close(grid.grad, expected.expand_as(grid.grad), rtol=1e-7, atol=0.0)


def forward_backward(
    reference: bool,
    x: torch.Tensor,
    grid: torch.Tensor,
    weight: torch.Tensor,
    padding_mode: str = "zeros",
    align_corners: bool = False,
    *,
    exact_forward: bool = False,
    seed: int = 0,
    backend: str = "torch",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Output and the gradients w.r.t. input and grid of ``sum(weight * out)``, with the library (``backend``)
    or with the straightforward formulation, from the same seeded generator."""
    options = SamplerOptions(
        "linearized", padding_mode, align_corners, exact_forward=exact_forward, backend=backend
    )
    xi, gi = x.clone().requires_grad_(True), grid.clone().requires_grad_(True)
    if reference:
        out = reference_linearized_grid_sample(xi, gi, options, seeded(seed))
    else:
        out = grid_sample(xi, gi, options=options, generator=seeded(seed))
    (out * weight).sum().backward()
    assert xi.grad is not None and gi.grad is not None
    return out.detach(), xi.grad, gi.grad


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize(("padding_mode", "align_corners"), itertools.product(PADDINGS, (False, True)))
@pytest.mark.parametrize("exact_forward", [False, True])
def test_matches_straightforward_formulation(
    padding_mode: str, align_corners: bool, exact_forward: bool, backend: str
) -> None:
    x = torch.rand(5, 3, 17, 15, dtype=torch.float64, generator=seeded())
    grid = similarity_grid(5, 6, dtype=torch.float64, align_corners=align_corners)
    weight = torch.randn(5, 3, 6, 6, dtype=torch.float64, generator=seeded(2))
    args = (x, grid, weight, padding_mode, align_corners)
    ours = forward_backward(False, *args, exact_forward=exact_forward, backend=backend)
    ref = forward_backward(True, *args, exact_forward=exact_forward)
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-10, atol=1e-10)  # forward value
    torch.testing.assert_close(ours[1], ref[1], rtol=1e-10, atol=1e-10)  # input gradient
    torch.testing.assert_close(ours[2], ref[2], rtol=1e-8, atol=1e-8)  # grid gradient


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_matches_straightforward_formulation_float32_several_chunks(
    monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    import training.sampling.offsets as offsets

    monkeypatch.setattr(offsets, "CPU_CHUNK_ELEMENTS", 200)  # 3 * 6 * 6 = 108 per image: 1 image per chunk
    x = torch.rand(4, 3, 20, 20, generator=seeded())
    grid = similarity_grid(4, 6)
    weight = torch.ones(4, 3, 6, 6)
    ours = forward_backward(False, x, grid, weight, seed=4, backend=backend)
    ref = forward_backward(True, x, grid, weight, seed=4)
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-4, atol=1e-5)
    scale = float(ref[2].abs().max())
    torch.testing.assert_close(ours[2], ref[2], rtol=1e-4, atol=1e-4 * scale)


def test_seeded_generator_is_deterministic_and_seeds_differ() -> None:
    x = torch.rand(2, 3, 16, 16, generator=seeded())
    grads: list[torch.Tensor] = []
    outs: list[torch.Tensor] = []
    for seed in (5, 5, 6):
        grid = similarity_grid(2, 5).requires_grad_(True)
        out = grid_sample(x, grid, "linearized", generator=seeded(seed))
        out.square().sum().backward()
        assert grid.grad is not None
        grads.append(grid.grad)
        outs.append(out.detach())
    assert torch.equal(grads[0], grads[1]) and torch.equal(outs[0], outs[1])
    assert not torch.equal(grads[0], grads[2])


def test_default_generator_follows_manual_seed() -> None:
    x = torch.rand(1, 1, 10, 10, generator=seeded())
    grid = similarity_grid(1, 4)
    torch.manual_seed(123)
    first = grid_sample(x, grid, "linearized")
    torch.manual_seed(123)
    assert torch.equal(first, grid_sample(x, grid, "linearized"))


def _grid_grad(x: torch.Tensor, grid: torch.Tensor, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
    grid = grid.clone().requires_grad_(True)
    out = grid_sample(x, grid, "linearized", **kwargs)  # type: ignore[arg-type]
    out.sum().backward()
    assert grid.grad is not None
    return out.detach(), grid.grad


@pytest.mark.parametrize("padding_mode", PADDINGS)
def test_constant_image_gives_zero_gradient_and_constant_value(padding_mode: str) -> None:
    x = torch.full((2, 3, 30, 30), 0.25)
    grid = similarity_grid(2, 5) * 0.4  # auxiliary points stay inside, where zeros padding is constant too
    out, grad = _grid_grad(x, grid, padding_mode=padding_mode, generator=seeded())
    torch.testing.assert_close(out, torch.full_like(out, 0.25))
    assert torch.isfinite(grad).all() and grad.abs().max() < 1e-4


@pytest.mark.parametrize("exact_forward", [False, True])
def test_grid_entirely_outside_gives_zeros_without_nan(
    exact_forward: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    x = torch.rand(2, 3, 9, 9, generator=seeded())
    grid = torch.full((2, 4, 4, 2), 5.0)
    out, grad = _grid_grad(x, grid, exact_forward=exact_forward, generator=seeded())
    assert torch.equal(out, torch.zeros_like(out))
    assert torch.equal(grad, torch.zeros_like(grad))
    assert capsys.readouterr().out == ""


def test_degenerate_offsets_give_zero_gradient() -> None:
    x = torch.rand(1, 2, 9, 9, generator=seeded())
    grid = similarity_grid(1, 4)
    out, grad = _grid_grad(x, grid, offset_std=0.0, push_std=0.0, generator=seeded())
    assert torch.equal(grad, torch.zeros_like(grad))
    torch.testing.assert_close(out, F.grid_sample(x, grid, align_corners=False))


def test_nan_input_gives_finite_grid_gradient() -> None:
    x = torch.rand(1, 2, 9, 9, generator=seeded())
    x[0, 0, 3:6, 3:6] = float("nan")
    x[0, 1, 2, 2] = float("inf")
    grid = similarity_grid(1, 6)
    _, grad = _grid_grad(x, grid, generator=seeded())
    assert torch.isfinite(grad).all()


def test_half_precision_accumulates_in_float32() -> None:
    x = torch.rand(2, 3, 16, 16, generator=seeded())
    grid = similarity_grid(2, 6)
    _, grad32 = _grid_grad(x, grid, exact_forward=True, generator=seeded(1))
    out16, grad16 = _grid_grad(x.bfloat16(), grid.bfloat16(), exact_forward=True, generator=seeded(1))
    assert out16.dtype == torch.bfloat16 and grad16.dtype == torch.bfloat16
    assert torch.isfinite(grad16.float()).all()
    cosine = F.cosine_similarity(grad16.float().flatten(), grad32.flatten(), dim=0)
    assert cosine > 0.95


def test_offset_spread_defaults_follow_the_paper() -> None:
    spread = offset_spread((50, 50), (9, 9))
    rate = 50 / 9
    sigma_x_pixels = spread.in_input_pixels((50, 50), align_corners=False)[1]
    assert sigma_x_pixels == pytest.approx(((0.25 * rate) ** 2 + 1.0) ** 0.5)


def test_no_grad_and_exact_forward_without_grid_grad_is_bilinear() -> None:
    x = torch.rand(2, 3, 10, 10, generator=seeded())
    grid = similarity_grid(2, 4)
    out = grid_sample(x, grid, "linearized", exact_forward=True)
    assert torch.equal(out, F.grid_sample(x, grid, align_corners=False))
    with torch.no_grad():
        assert grid_sample(x, grid, "linearized").shape == (2, 3, 4, 4)
