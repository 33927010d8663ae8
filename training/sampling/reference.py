"""The straightforward formulation of linearized multi-sampling: the independent check of the library in the
tests, and the "straightforward" column of benchmarks/sampler.py. Not used by training.

It does what the authors' code does: materialize all K - 1 auxiliary grids and samples (a (N, K - 1, C, H_out,
W_out) tensor, from the input repeated K - 1 times), then solve every per-location least-squares problem with
``torch.linalg.lstsq`` on the design matrix ``[dx, dy, 1]``, and build the output with autograd (no custom
backward). It shares only the random offsets with the library (same generator, same draw order as the PyTorch
and C++ paths, :func:`training.sampling.offsets.auxiliary_offsets`), so it checks the fit, the forward value
and both gradients independently.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from training.sampling.offsets import auxiliary_offsets
from training.sampling.options import SamplerOptions


def reference_offsets(
    grid: torch.Tensor,
    in_size: tuple[int, int],
    channels: int,
    options: SamplerOptions,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """All auxiliary offsets at once, normalized, x then y.

    Args:
        grid: (N, H_out, W_out, 2).
        in_size: (H_in, W_in).
        channels: C (the batch chunks depend on it).
        options: K and the spreads.
        generator: random generator (None: torch's default).

    Returns:
        (N, K - 1, H_out, W_out, 2), float64 for a float64 grid, else float32.
    """
    n, h_out, w_out = grid.shape[:3]
    spread = options.spread(in_size, (h_out, w_out))
    dtype = torch.float64 if grid.dtype == torch.float64 else torch.float32
    offsets = torch.empty((n, options.num_aux, h_out, w_out, 2), dtype=dtype, device=grid.device)
    counts: dict[int, int] = {}
    for rows, planes in auxiliary_offsets(
        (n, channels, h_out, w_out),
        options.num_aux,
        spread,
        generator=generator,
        dtype=dtype,
        device=grid.device,
    ):
        k = counts.get(rows.start, 0)
        counts[rows.start] = k + 1
        offsets[rows, k] = planes.permute(1, 2, 3, 0)
    return offsets


def reference_linearized_grid_sample(
    input: torch.Tensor,
    grid: torch.Tensor,
    options: SamplerOptions | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Materialized linearized sampling of (N, C, H_in, W_in) at (N, H_out, W_out, 2) -> (N, C, H_out, W_out).

    Args:
        input: (N, C, H_in, W_in).
        grid: (N, H_out, W_out, 2), normalized, x then y.
        options: as for ``grid_sample(..., options=options)`` with mode "linearized" (None: the defaults); the
            backend is ignored.
        generator: random generator (None: torch's default).

    Returns:
        (N, C, H_out, W_out), differentiable w.r.t. ``input`` and ``grid`` by autograd.
    """
    options = SamplerOptions() if options is None else options
    n, c, h_in, w_in = input.shape
    h_out, w_out = grid.shape[1:3]
    k = options.num_aux
    offsets = reference_offsets(grid, (h_in, w_in), c, options, generator).to(grid.dtype)
    aux_grid = grid.detach().unsqueeze(1) + offsets  # (N, K-1, H_out, W_out, 2)
    padding, align = options.padding_mode, options.align_corners
    samples = F.grid_sample(
        input.detach().repeat_interleave(k, dim=0),
        aux_grid.reshape(n * k, h_out, w_out, 2),
        "bilinear",
        padding,
        align,
    ).reshape(n, k, c, h_out, w_out)
    centre = F.grid_sample(input, grid.detach(), "bilinear", padding, align)
    delta = samples - centre.detach().unsqueeze(1)  # (N, K-1, C, H, W)
    design = torch.cat((offsets, torch.ones_like(offsets[..., :1])), dim=-1)  # (N, K-1, H, W, 3)
    design = design.permute(0, 2, 3, 1, 4)  # (N, H, W, K-1, 3)
    rhs = delta.permute(0, 3, 4, 1, 2)  # (N, H, W, K-1, C)
    solution = torch.linalg.lstsq(design, rhs).solution  # (N, H, W, 3, C)
    slope = solution[..., :2, :]  # (N, H, W, 2, C)
    intercept = solution[..., 2, :].permute(0, 3, 1, 2)  # (N, C, H, W)
    plane = torch.einsum("nhwx,nhwxc->nchw", grid - grid.detach(), slope)
    output = centre + plane
    return output if options.exact_forward else output + intercept
