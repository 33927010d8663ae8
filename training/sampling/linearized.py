"""Linearized multi-sampling (Jiang et al., ICCV 2019) as a ``torch.autograd.Function``.

Around every sampling point, K - 1 auxiliary points are sampled bilinearly (same input, same padding mode) at
random offsets (:mod:`training.sampling.offsets`), and a plane with intercept is fitted by least squares to
the auxiliary intensities against their offsets, per channel (:mod:`training.sampling.fit`). Then:

* forward value: the fitted plane's value at the sampling point (the centre's bilinear sample plus the fitted
  intercept), or exactly the centre's bilinear sample with ``exact_forward=True`` (the authors'
  ``fixed_bias``);
* gradient with respect to ``input``: through the centre's bilinear sample only (the fit is a constant), i.e.
  exactly bilinear's input gradient;
* gradient with respect to ``grid``: ``sum_c grad_output[c] * slope[c]`` per output location (x, y).

Memory and speed: the fit is accumulated one auxiliary point at a time into output-sized running sums (on CPU
one batch chunk at a time, :func:`training.sampling.offsets.batch_chunks`, so that they stay in cache); the
backward keeps only the slope tensor (2, N, C, H_out, W_out) besides references to ``input`` and ``grid``. No
(N, K, C, H_out, W_out) tensor and no copy of the input is ever made. The input gradient is aten's bilinear
backward restricted to the input (``output_mask``). This is the pure PyTorch path, used on CPU and CUDA alike.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

from training.sampling.fit import PlaneFitSums
from training.sampling.modes import INTERPOLATION_CODES, PADDING_CODES
from training.sampling.offsets import OffsetSpread, batch_chunks, offset_spread

_BILINEAR = INTERPOLATION_CODES["bilinear"]


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the fit is accumulated in: float64 for float64, float32 for everything else."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def linearized_fit(
    input: torch.Tensor,
    grid: torch.Tensor,
    padding_code: int,
    align_corners: bool,
    num_aux: int,
    spread: OffsetSpread,
    generator: torch.Generator | None,
    *,
    need_value: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Sample the auxiliary points and fit the plane, without autograd.

    Args:
        input: (N, C, H_in, W_in).
        grid: (N, H_out, W_out, 2), normalized [-1, 1], x then y, same dtype as ``input``.
        padding_code: aten's padding code (0 zeros, 1 border, 2 reflection).
        align_corners: ``grid_sample``'s flag.
        num_aux: K - 1.
        spread: std of the offsets, normalized units.
        generator: random generator, or None for torch's default one.
        need_value: compute the plane's value at the sampling point (not needed for ``exact_forward``).

    Returns:
        ``(value, slope)`` in the accumulation dtype: value (N, C, H_out, W_out), the plane's value at the
        sampling point (None if not needed); slope (2, N, C, H_out, W_out), d value / d x and d value / d y in
        intensity per normalized unit.
    """
    n, c = input.shape[:2]
    h_out, w_out = grid.shape[1:3]
    acc_dtype = accumulation_dtype(input.dtype)
    device = input.device
    value = torch.empty((n, c, h_out, w_out), dtype=acc_dtype, device=device) if need_value else None
    slope = torch.empty((2, n, c, h_out, w_out), dtype=acc_dtype, device=device)
    for rows in batch_chunks(n, c * h_out * w_out, device):
        sums = _accumulate_chunk(
            input[rows],
            grid[rows],
            padding_code,
            align_corners,
            num_aux,
            spread,
            generator,
            sum_v=value[rows] if value is not None else None,
            sum_zv=slope[:, rows],
        )
        sums.solve((spread.x, spread.y), need_value=need_value)
    return value, slope


def _accumulate_chunk(
    input: torch.Tensor,
    grid: torch.Tensor,
    padding_code: int,
    align_corners: bool,
    num_aux: int,
    spread: OffsetSpread,
    generator: torch.Generator | None,
    *,
    sum_v: torch.Tensor | None,
    sum_zv: torch.Tensor,
) -> PlaneFitSums:
    """Sample the K - 1 auxiliary points of one batch chunk and accumulate the fit's sums.

    Args:
        input: (N_chunk, C, H_in, W_in).
        grid: (N_chunk, H_out, W_out, 2), normalized, x then y.
        padding_code, align_corners, num_aux, spread, generator: as in :func:`linearized_fit`.
        sum_v: (N_chunk, C, H_out, W_out) buffer for the sum of samples, or None for a temporary one.
        sum_zv: (2, N_chunk, C, H_out, W_out) buffer for the sums of z * v.

    Returns:
        The sums, ready for :meth:`PlaneFitSums.solve` (which writes its results into the buffers).
    """
    n = input.shape[0]
    h_out, w_out = grid.shape[1:3]
    acc_dtype = sum_zv.dtype
    device = input.device
    low_precision = acc_dtype != input.dtype
    if sum_v is None:
        sum_v = torch.empty(sum_zv.shape[1:], dtype=acc_dtype, device=device)
    # The grid as x and y planes (2, N, H_out, W_out): the auxiliary grids are then contiguous planes, passed
    # to grid_sampler as a (N, H_out, W_out, 2) view (it takes strided grids at the same speed).
    grid_planes = grid.to(acc_dtype).permute(3, 0, 1, 2).contiguous()
    spread_planes = torch.tensor([spread.x, spread.y], dtype=acc_dtype, device=device).view(2, 1, 1, 1)
    z = torch.empty((2, n, 1, h_out, w_out), dtype=acc_dtype, device=device)
    z_planes = z.squeeze(2)
    aux_planes = torch.empty_like(grid_planes)
    aux_grid = aux_planes.permute(1, 2, 3, 0)
    inv_spread_planes = spread_planes.reciprocal().nan_to_num(posinf=0.0) if low_precision else None
    sums: PlaneFitSums | None = None
    for _ in range(num_aux):
        # The random stream of training.sampling.offsets.auxiliary_offsets: randn((2, N_chunk, H_out, W_out)).
        z.normal_(generator=generator)
        torch.addcmul(grid_planes, z_planes, spread_planes, out=aux_planes)
        sample_grid = aux_grid
        if inv_spread_planes is not None:
            sample_grid = aux_grid.to(input.dtype)
            # Fit against the offsets actually sampled (after rounding to the input's dtype).
            z_planes.copy_((sample_grid.to(acc_dtype).permute(3, 0, 1, 2) - grid_planes) * inv_spread_planes)
        sample = torch.grid_sampler(input, sample_grid, _BILINEAR, padding_code, align_corners)
        if sums is None:
            sums = PlaneFitSums.first(z, sample, sum_v=sum_v, sum_zv=sum_zv)
        else:
            sums.add(z, sample)
    if sums is None:
        raise ValueError(f"num_aux must be >= 1, got {num_aux}")
    return sums


def grid_gradient(grad_output: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    """Gradient w.r.t. the grid: ``sum_c grad_output[:, c] * slope[:, :, c]`` per output location.

    Args:
        grad_output: (N, C, H_out, W_out).
        slope: (2, N, C, H_out, W_out), x then y, intensity per normalized unit.

    Returns:
        (N, H_out, W_out, 2) in the slope's dtype, computed batch chunk by batch chunk on CPU (the product is
        never materialized for the whole batch).
    """
    n, c, h_out, w_out = grad_output.shape
    planes = torch.empty((2, n, h_out, w_out), dtype=slope.dtype, device=slope.device)
    for rows in batch_chunks(n, c * h_out * w_out, slope.device):
        torch.sum(slope[:, rows] * grad_output[rows].to(slope.dtype), dim=2, out=planes[:, rows])
    return planes.permute(1, 2, 3, 0)


class LinearizedGridSample(torch.autograd.Function):
    """The linearized sampler. Returns ``(output, slope)``; only ``output`` is differentiable.

    ``slope`` (2, N, C, H_out, W_out) is the fitted plane's slope, kept for the backward.
    """

    @staticmethod
    def forward(
        input: torch.Tensor,
        grid: torch.Tensor,
        padding_code: int,
        align_corners: bool,
        num_aux: int,
        spread: OffsetSpread,
        exact_forward: bool,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        value, slope = linearized_fit(
            input, grid, padding_code, align_corners, num_aux, spread, generator, need_value=not exact_forward
        )
        if value is None:
            output = torch.grid_sampler(input, grid, _BILINEAR, padding_code, align_corners)
        else:
            output = value.to(input.dtype)
        return output, slope

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, ...]) -> None:
        input, grid, padding_code, align_corners = inputs[:4]
        slope = output[1]
        ctx.mark_non_differentiable(slope)
        ctx.set_materialize_grads(False)  # no zero-filled gradient for ``slope`` (two outputs of memory)
        ctx.save_for_backward(input, grid, slope)
        ctx.padding_code = padding_code
        ctx.align_corners = align_corners

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_output = grads[0]
        input, grid, slope = ctx.saved_tensors
        grad_input = grad_grid = None
        if grad_output is None:
            return None, None, None, None, None, None, None, None
        if ctx.needs_input_grad[0]:
            grad_input = torch.ops.aten.grid_sampler_2d_backward(
                grad_output, input, grid, _BILINEAR, ctx.padding_code, ctx.align_corners, [True, False]
            )[0]
        if ctx.needs_input_grad[1]:
            grad_grid = grid_gradient(grad_output, slope).to(grid.dtype)
        return grad_input, grad_grid, None, None, None, None, None, None


def linearized_grid_sample(
    input: torch.Tensor,
    grid: torch.Tensor,
    padding_mode: str = "zeros",
    align_corners: bool = False,
    *,
    num_samples: int = 8,
    offset_std: float | None = None,
    push_std: float | None = None,
    exact_forward: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Linearized multi-sampling of ``input`` at ``grid`` (arguments already validated).

    Args:
        input: (N, C, H_in, W_in).
        grid: (N, H_out, W_out, 2), normalized [-1, 1], x then y (``align_corners`` as given).
        padding_mode: "zeros", "border" or "reflection", for the centre and the auxiliary samples alike.
        align_corners: ``grid_sample``'s flag.
        num_samples: K, the centre plus K - 1 auxiliary samples per output location.
        offset_std: offset noise std in output pixels (None: 0.25).
        push_std: push-away jitter std in input pixels (None: 1.0).
        exact_forward: return exactly the bilinear sample (same gradients).
        generator: random generator for the offsets (None: torch's default generator).

    Returns:
        (N, C, H_out, W_out), the input's dtype.
    """
    needs_fit = not exact_forward or (torch.is_grad_enabled() and grid.requires_grad)
    padding_code = PADDING_CODES[padding_mode]
    if not needs_fit:
        # The fit only feeds the grid gradient here: the result is the bilinear sample.
        return torch.grid_sampler(input, grid, _BILINEAR, padding_code, align_corners)
    spread = offset_spread(
        (input.shape[2], input.shape[3]), (grid.shape[1], grid.shape[2]), offset_std, push_std
    )
    output, _ = LinearizedGridSample.apply(
        input, grid, padding_code, align_corners, num_samples - 1, spread, exact_forward, generator
    )
    return output
