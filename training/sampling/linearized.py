"""Linearized multi-sampling (Jiang et al., ICCV 2019) as a ``torch.autograd.Function``, with three backends.

Around every sampling point, K - 1 auxiliary points are sampled bilinearly (same input, same padding mode) at
random offsets (:mod:`training.sampling.offsets`), and a plane with intercept is fitted by least squares to
the auxiliary intensities against their offsets, per channel (:mod:`training.sampling.fit`). Then:

* forward value: the fitted plane's value at the sampling point (the centre's bilinear sample plus the fitted
  intercept), or exactly the centre's bilinear sample with ``exact_forward=True`` (the authors'
  ``fixed_bias``);
* gradient with respect to ``input``: through the centre's bilinear sample only (the fit is a constant), i.e.
  exactly bilinear's input gradient (aten's ``grid_sampler_2d_backward`` restricted to the input);
* gradient with respect to ``grid``: ``sum_c grad_output[c] * slope[c]`` per output location (x, y).

Backends (``SamplerOptions.backend``, :func:`select_backend`):

* "torch", the pure PyTorch path and the reference of the others: the fit is accumulated one auxiliary point
  at a time into output-sized running sums, on CPU one batch chunk at a time
  (:func:`training.sampling.offsets.batch_chunks`) so that they stay in cache.
* "cpu", the fused C++ kernel (:mod:`training.sampling.cpu_kernel`): one pass over the output locations per
  batch chunk, the offsets drawn from the *same* torch random stream as the PyTorch path.
* "triton", the fused Triton kernel for CUDA (:mod:`training.sampling.triton_kernel`): offsets from Philox
  inside the kernel, with the seed contract documented there.

Memory: the backward keeps only the slope tensor (2, N, C, H_out, W_out) besides references to ``input`` and
``grid``. No (N, K, C, H_out, W_out) tensor and no copy of the input is made (the C++ kernel copies a
non-contiguous input to a contiguous one).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

from training.errors import ConfigError
from training.sampling import cpu_kernel, triton_kernel
from training.sampling.fit import RCOND, PlaneFitSums
from training.sampling.modes import INTERPOLATION_CODES
from training.sampling.offsets import OffsetSpread, batch_chunks
from training.sampling.options import SamplerOptions

_BILINEAR = INTERPOLATION_CODES["bilinear"]


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the fit is accumulated in: float64 for float64, float32 for everything else."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def select_backend(options: SamplerOptions, input: torch.Tensor) -> str:
    """The backend that runs the linearized training forward of ``input``.

    "auto": "triton" for CUDA float32/float16/bfloat16 tensors when Triton is importable; "cpu" for CPU
    float32/float64 tensors when the C++ kernel builds; else "torch". A forced backend that cannot take the
    input raises.

    Raises:
        ConfigError: a forced "cpu" or "triton" backend that is unavailable for this input (the message says
            why).
    """
    backend = options.backend
    if backend == "torch":
        return backend
    if backend == "auto":
        if input.device.type == "cuda" and triton_kernel.supports(input):
            return "triton"
        if input.device.type == "cpu" and cpu_kernel.supports(input):
            return "cpu"
        return "torch"
    if backend == "cpu" and not cpu_kernel.supports(input):
        raise ConfigError(
            f"backend 'cpu' takes CPU float32/float64 tensors and a built kernel: got {input.device.type} "
            f"{input.dtype}; kernel: {cpu_kernel.status()}"
        )
    if backend == "triton" and not triton_kernel.supports(input):
        raise ConfigError(
            f"backend 'triton' takes CUDA tensors (CPU tensors only with TRITON_INTERPRET=1) of float32, "
            f"float16, bfloat16 or float64 and an importable triton: got {input.device.type} {input.dtype}; "
            f"triton: {triton_kernel.status()}"
        )
    return backend


def linearized_fit(
    input: torch.Tensor,
    grid: torch.Tensor,
    options: SamplerOptions,
    generator: torch.Generator | None,
    *,
    backend: str = "torch",
    need_value: bool = True,
    offsets: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Sample the auxiliary points and fit the plane, without autograd.

    Args:
        input: (N, C, H_in, W_in).
        grid: (N, H_out, W_out, 2), normalized [-1, 1], x then y, same dtype as ``input``.
        options: the sampler's options (padding, align_corners, K, spreads).
        generator: random generator, or None for torch's default one.
        backend: "torch", "cpu" or "triton" (already selected, :func:`select_backend`).
        need_value: compute the plane's value at the sampling point (not needed for ``exact_forward``).
        offsets: "torch" backend only: (K - 1, 2, N, H_out, W_out) standard-normal offsets to use instead of
            drawing them (tests: the same offsets as another backend drew).

    Returns:
        ``(value, slope)`` in the accumulation dtype: value (N, C, H_out, W_out), the plane's value at the
        sampling point (None if not needed); slope (2, N, C, H_out, W_out), d value / d x and d value / d y in
        intensity per normalized unit.
    """
    n, c = input.shape[:2]
    h_out, w_out = grid.shape[1:3]
    spread = options.spread((input.shape[2], input.shape[3]), (h_out, w_out))
    if backend == "triton":
        return triton_kernel.fit(input, grid, options, spread, generator, need_value=need_value)
    acc_dtype = accumulation_dtype(input.dtype)
    device = input.device
    value = torch.empty((n, c, h_out, w_out), dtype=acc_dtype, device=device) if need_value else None
    slope = torch.empty((2, n, c, h_out, w_out), dtype=acc_dtype, device=device)
    if backend == "cpu":
        input, grid = input.contiguous(), grid.contiguous()
    for rows in batch_chunks(n, c * h_out * w_out, device):
        chunk_value = value[rows] if value is not None else None
        if backend == "cpu":
            z = draw_chunk_offsets(
                rows.stop - rows.start, h_out, w_out, options.num_aux, generator, acc_dtype
            )
            cpu_kernel.fit(
                input[rows],
                grid[rows],
                z,
                (spread.x, spread.y),
                options.padding_code,
                options.align_corners,
                RCOND,
                value=chunk_value,
                slope=slope[:, rows],
            )
            continue
        sums = _accumulate_chunk(
            input[rows],
            grid[rows],
            options,
            spread,
            generator,
            sum_v=chunk_value,
            sum_zv=slope[:, rows],
            offsets=None if offsets is None else offsets[:, :, rows],
        )
        sums.solve((spread.x, spread.y), need_value=need_value)
    return value, slope


def draw_chunk_offsets(
    n: int, h_out: int, w_out: int, num_aux: int, generator: torch.Generator | None, dtype: torch.dtype
) -> torch.Tensor:
    """The standard-normal offsets of one CPU batch chunk, (K - 1, 2, N_chunk, H_out, W_out).

    The same random stream as the PyTorch path: for each auxiliary point, one contiguous
    ``normal_((2, N_chunk, H_out, W_out))`` (:func:`training.sampling.offsets.auxiliary_offsets`).
    """
    z = torch.empty((num_aux, 2, n, h_out, w_out), dtype=dtype)
    for k in range(num_aux):
        z[k].normal_(generator=generator)
    return z


def _accumulate_chunk(
    input: torch.Tensor,
    grid: torch.Tensor,
    options: SamplerOptions,
    spread: OffsetSpread,
    generator: torch.Generator | None,
    *,
    sum_v: torch.Tensor | None,
    sum_zv: torch.Tensor,
    offsets: torch.Tensor | None = None,
) -> PlaneFitSums:
    """Sample the K - 1 auxiliary points of one batch chunk and accumulate the fit's sums (PyTorch path).

    Args:
        input: (N_chunk, C, H_in, W_in).
        grid: (N_chunk, H_out, W_out, 2), normalized, x then y.
        options, generator: as in :func:`linearized_fit`.
        spread: the offsets' per-axis std, normalized units.
        sum_v: (N_chunk, C, H_out, W_out) buffer for the sum of samples, or None for a temporary one.
        sum_zv: (2, N_chunk, C, H_out, W_out) buffer for the sums of z * v.
        offsets: (K - 1, 2, N_chunk, H_out, W_out) given standard-normal offsets, or None to draw them.

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
    for k in range(options.num_aux):
        if offsets is None:
            # The random stream of offsets.auxiliary_offsets: randn((2, N_chunk, H_out, W_out)).
            z.normal_(generator=generator)
        else:
            z_planes.copy_(offsets[k])
        torch.addcmul(grid_planes, z_planes, spread_planes, out=aux_planes)
        sample_grid = aux_grid
        if inv_spread_planes is not None:
            sample_grid = aux_grid.to(input.dtype)
            # Fit against the offsets actually sampled (after rounding to the input's dtype).
            z_planes.copy_((sample_grid.to(acc_dtype).permute(3, 0, 1, 2) - grid_planes) * inv_spread_planes)
        sample = torch.grid_sampler(
            input, sample_grid, _BILINEAR, options.padding_code, options.align_corners
        )
        if sums is None:
            sums = PlaneFitSums.first(z, sample, sum_v=sum_v, sum_zv=sum_zv)
        else:
            sums.add(z, sample)
    if sums is None:
        raise ValueError(f"num_aux must be >= 1, got {options.num_aux}")
    return sums


def grid_gradient(grad_output: torch.Tensor, slope: torch.Tensor, backend: str = "torch") -> torch.Tensor:
    """Gradient w.r.t. the grid: ``sum_c grad_output[:, c] * slope[:, :, c]`` per output location.

    Args:
        grad_output: (N, C, H_out, W_out).
        slope: (2, N, C, H_out, W_out), x then y, intensity per normalized unit.
        backend: "torch" (batch chunk by batch chunk on CPU: the product is never materialized for the whole
            batch), "cpu" (the C++ kernel) or "triton" (a small Triton kernel).

    Returns:
        (N, H_out, W_out, 2) in the slope's dtype.
    """
    if backend == "cpu":
        return cpu_kernel.grid_gradient(grad_output.to(slope.dtype).contiguous(), slope)
    if backend == "triton":
        return triton_kernel.grid_gradient(grad_output, slope)
    n, c, h_out, w_out = grad_output.shape
    planes = torch.empty((2, n, h_out, w_out), dtype=slope.dtype, device=slope.device)
    for rows in batch_chunks(n, c * h_out * w_out, slope.device):
        torch.sum(slope[:, rows] * grad_output[rows].to(slope.dtype), dim=2, out=planes[:, rows])
    return planes.permute(1, 2, 3, 0)


class LinearizedGridSample(torch.autograd.Function):
    """The linearized sampler. ``apply(input, grid, options, generator)`` returns ``(output, slope)``; only
    ``output`` is differentiable.

    ``slope`` (2, N, C, H_out, W_out) is the fitted plane's slope, kept for the backward.
    """

    @staticmethod
    def forward(
        input: torch.Tensor,
        grid: torch.Tensor,
        options: SamplerOptions,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        backend = select_backend(options, input)
        value, slope = linearized_fit(
            input, grid, options, generator, backend=backend, need_value=not options.exact_forward
        )
        if value is None:
            output = torch.grid_sampler(input, grid, _BILINEAR, options.padding_code, options.align_corners)
        else:
            output = value.to(input.dtype)
        return output, slope

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, ...]) -> None:
        input, grid, options = inputs[:3]
        slope = output[1]
        ctx.mark_non_differentiable(slope)
        ctx.set_materialize_grads(False)  # no zero-filled gradient for ``slope`` (two outputs of memory)
        ctx.save_for_backward(input, grid, slope)
        ctx.options = options
        ctx.backend = select_backend(options, input)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_output = grads[0]
        input, grid, slope = ctx.saved_tensors
        options: SamplerOptions = ctx.options
        grad_input = grad_grid = None
        if grad_output is None:
            return None, None, None, None
        if ctx.needs_input_grad[0]:
            grad_input = torch.ops.aten.grid_sampler_2d_backward(
                grad_output,
                input,
                grid,
                _BILINEAR,
                options.padding_code,
                options.align_corners,
                [True, False],
            )[0]
        if ctx.needs_input_grad[1]:
            grad_grid = grid_gradient(grad_output, slope, ctx.backend).to(grid.dtype)
        return grad_input, grad_grid, None, None


def linearized_grid_sample(
    input: torch.Tensor,
    grid: torch.Tensor,
    options: SamplerOptions,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Linearized multi-sampling of ``input`` at ``grid`` (arguments already validated).

    Args:
        input: (N, C, H_in, W_in).
        grid: (N, H_out, W_out, 2), normalized [-1, 1], x then y (``options.align_corners`` as given).
        options: padding, align_corners, K, spreads, ``exact_forward`` and the backend.
        generator: random generator for the offsets (None: torch's default generator).

    Returns:
        (N, C, H_out, W_out), the input's dtype.
    """
    needs_fit = not options.exact_forward or (torch.is_grad_enabled() and grid.requires_grad)
    if not needs_fit:
        # The fit only feeds the grid gradient here: the result is the bilinear sample.
        return torch.grid_sampler(input, grid, _BILINEAR, options.padding_code, options.align_corners)
    output, _ = LinearizedGridSample.apply(input, grid, options, generator)
    return output
