"""The straightforward formulation of linearized multi-sampling, for tests and the benchmark only.

It does what the authors' code does: materialize all K - 1 auxiliary grids and samples (a (N, K - 1, C, H_out,
W_out) tensor, from the input repeated K - 1 times), then solve every per-location least-squares problem with
``torch.linalg.lstsq`` on the design matrix ``[dx, dy, 1]``, and build the output with autograd (no custom
backward). It shares only the random offsets with the library (same generator, same draw order), so it checks
the fit, the forward value and both gradients independently.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from training.sampling.offsets import auxiliary_offsets, offset_spread


def reference_offsets(
    grid: torch.Tensor,
    in_size: tuple[int, int],
    channels: int,
    num_samples: int,
    *,
    offset_std: float | None = None,
    push_std: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """All auxiliary offsets at once, (N, K - 1, H_out, W_out, 2), normalized, x then y."""
    n, h_out, w_out = grid.shape[:3]
    spread = offset_spread(in_size, (h_out, w_out), offset_std, push_std)
    dtype = torch.float64 if grid.dtype == torch.float64 else torch.float32
    offsets = torch.empty((n, num_samples - 1, h_out, w_out, 2), dtype=dtype, device=grid.device)
    counts: dict[int, int] = {}
    for rows, planes in auxiliary_offsets(
        (n, channels, h_out, w_out),
        num_samples - 1,
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
    padding_mode: str = "zeros",
    align_corners: bool = False,
    *,
    num_samples: int = 8,
    offset_std: float | None = None,
    push_std: float | None = None,
    exact_forward: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Materialized linearized sampling of (N, C, H_in, W_in) at (N, H_out, W_out, 2) -> (N, C, H_out, W_out).

    Same arguments and semantics as ``grid_sample(..., mode="linearized")``.
    """
    n, c, h_in, w_in = input.shape
    h_out, w_out = grid.shape[1:3]
    k = num_samples - 1
    offsets = reference_offsets(
        grid, (h_in, w_in), c, num_samples, offset_std=offset_std, push_std=push_std, generator=generator
    ).to(grid.dtype)
    aux_grid = grid.detach().unsqueeze(1) + offsets  # (N, K-1, H_out, W_out, 2)
    samples = F.grid_sample(
        input.detach().repeat_interleave(k, dim=0),
        aux_grid.reshape(n * k, h_out, w_out, 2),
        mode="bilinear",
        padding_mode=padding_mode,
        align_corners=align_corners,
    ).reshape(n, k, c, h_out, w_out)
    centre = F.grid_sample(
        input, grid.detach(), mode="bilinear", padding_mode=padding_mode, align_corners=align_corners
    )
    delta = samples - centre.detach().unsqueeze(1)  # (N, K-1, C, H, W)
    design = torch.cat((offsets, torch.ones_like(offsets[..., :1])), dim=-1)  # (N, K-1, H, W, 3)
    design = design.permute(0, 2, 3, 1, 4)  # (N, H, W, K-1, 3)
    rhs = delta.permute(0, 3, 4, 1, 2)  # (N, H, W, K-1, C)
    solution = torch.linalg.lstsq(design, rhs).solution  # (N, H, W, 3, C)
    slope = solution[..., :2, :]  # (N, H, W, 2, C)
    intercept = solution[..., 2, :].permute(0, 3, 1, 2)  # (N, C, H, W)
    plane = torch.einsum("nhwx,nhwxc->nchw", grid - grid.detach(), slope)
    output = centre + plane
    return output if exact_forward else output + intercept
