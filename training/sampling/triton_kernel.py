"""The fused Triton kernel of linearized sampling for CUDA tensors (and, for tests, CPU tensors under
``TRITON_INTERPRET=1``). Triton is optional: this module imports it only when a kernel is launched.

What one launch computes (``triton_impl.linearized_fit_kernel``): per block of output locations and channels,
the K - 1 auxiliary offsets, their bilinear samples (every padding mode, both ``align_corners``), the fit's
sums in registers (float32, or float64 for float64 inputs; float16/bfloat16 inputs are loaded and converted),
and the plane's value and slope. Only output-sized results are written: value (N, C, H_out, W_out) and slope
(2, N, C, H_out, W_out). The backward's grid gradient ``sum_c grad_output * slope`` is a second small kernel;
the input gradient is aten's bilinear backward, as on every backend.

**Random offsets, the seed contract.** The offsets come from Philox inside the kernel, not from torch's
stream, so the Triton path and the PyTorch path draw different offsets for the same generator (same
distribution). Per call:

* ``seed = torch.empty((), dtype=torch.int64, device=input.device).random_(generator=generator)``: one draw
  from the generator (or torch's default generator of the device), so ``torch.manual_seed`` and a seeded
  ``generator`` make calls reproducible;
* auxiliary point k (0 .. K-2) of output location ``p = (n * H_out + i) * W_out + j`` uses
  ``(z_x, z_y) = tl.randn4x(seed, k * N * H_out * W_out + p)[:2]``: Box-Muller of the first two uint32 of
  Philox4x32-10 with key ``seed`` and counter ``(counter mod 2^32, counter >> 32, 0, 0)``;
* the offset is ``(s_x z_x, s_y z_y)``, the spread of :func:`training.sampling.offsets.offset_spread`.

:func:`offsets` materializes exactly these z (a third kernel), so the PyTorch path can be run on the same
offsets (``linearized_fit(..., offsets=z)``); the tests compare both that way.

Differences from the PyTorch path: for float16/bfloat16 the auxiliary coordinates stay in float32 (the PyTorch
path rounds them to the input's dtype and fits the rounded offsets).
"""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType
from typing import Any

import torch

from training.sampling.fit import RCOND
from training.sampling.offsets import OffsetSpread
from training.sampling.options import SamplerOptions

DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
"""Input dtypes the kernel takes."""

_impl: ModuleType | None = None


def importable() -> bool:
    """Whether ``triton`` is installed (without importing it)."""
    return importlib.util.find_spec("triton") is not None


def interpreted() -> bool:
    """Whether Triton's interpreter runs kernels (``TRITON_INTERPRET=1``, set before triton is imported):
    then the kernels take CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def status() -> str:
    """Why the kernel can or cannot run here."""
    if not importable():
        return "triton is not installed"
    return "triton importable" + (" (interpreter, TRITON_INTERPRET=1)" if interpreted() else "")


def supports(tensor: torch.Tensor) -> bool:
    """Whether the kernel takes this input: a CUDA tensor (or a CPU tensor under the interpreter) of a dtype
    in :data:`DTYPES`, with triton importable."""
    if tensor.dtype not in DTYPES or not importable():
        return False
    return tensor.device.type == "cuda" or (tensor.device.type == "cpu" and interpreted())


def impl() -> ModuleType:
    """The kernels' module (imports triton on first use)."""
    global _impl
    if _impl is None:
        from training.sampling import triton_impl

        _impl = triton_impl
    return _impl


def _acc(dtype: torch.dtype) -> tuple[torch.dtype, Any]:
    tl = impl().tl
    return (torch.float64, tl.float64) if dtype == torch.float64 else (torch.float32, tl.float32)


def _blocks(c: int, device: torch.device) -> tuple[int, int]:
    """(BLOCK locations, BLOCK_C channels) of one program."""
    block_c = min(16, 1 << max(0, (max(c, 1) - 1).bit_length()))
    block = 256 if device.type == "cpu" else max(32, 512 // block_c)
    return block, block_c


def draw_seed(generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """The Philox seed of one call: one int64 draw from ``generator`` (None: torch's default generator of
    ``device``), kept on ``device`` (no host synchronization)."""
    return torch.empty((), dtype=torch.int64, device=device).random_(generator=generator)


def fit(
    input: torch.Tensor,
    grid: torch.Tensor,
    options: SamplerOptions,
    spread: OffsetSpread,
    generator: torch.Generator | None,
    *,
    need_value: bool = True,
    seed: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The fused forward: ``(value, slope)`` as :func:`training.sampling.linearized.linearized_fit` returns.

    Args:
        input: (N, C, H_in, W_in), any strides, a dtype of :data:`DTYPES`.
        grid: (N, H_out, W_out, 2), any strides, normalized, x then y.
        options: padding, align_corners, K.
        spread: the offsets' per-axis std, normalized units.
        generator: where the seed is drawn from (see the module's seed contract).
        need_value: compute the plane's value (False for ``exact_forward``).
        seed: a given seed (0-d int64 tensor on the input's device) instead of drawing one.

    Returns:
        value (N, C, H_out, W_out) or None, and slope (2, N, C, H_out, W_out), in float32 (float64 for float64
        inputs), contiguous.
    """
    mod = impl()
    n, c, h_in, w_in = input.shape
    h_out, w_out = grid.shape[1:3]
    acc, tl_acc = _acc(input.dtype)
    device = input.device
    value = torch.empty((n, c, h_out, w_out), dtype=acc, device=device) if need_value else None
    slope = torch.empty((2, n, c, h_out, w_out), dtype=acc, device=device)
    if seed is None:
        seed = draw_seed(generator, device)
    m = n * h_out * w_out
    if m == 0 or c == 0:
        return value, slope
    inv_x = 1.0 / spread.x if spread.x > 0 else 0.0
    inv_y = 1.0 / spread.y if spread.y > 0 else 0.0
    params = torch.tensor([spread.x, spread.y, inv_x, inv_y, RCOND], dtype=acc, device=device)
    block, block_c = _blocks(c, device)
    launch = (mod.triton.cdiv(m, block), mod.triton.cdiv(c, block_c))
    mod.linearized_fit_kernel[launch](
        input,
        grid,
        seed,
        params,
        value if value is not None else slope,
        slope,
        m,
        c,
        h_in,
        w_in,
        w_out,
        h_out * w_out,
        *input.stride(),
        *grid.stride(),
        slope.stride(0),
        NUM_AUX=options.num_aux,
        PADDING=options.padding_code,
        ALIGN=options.align_corners,
        NEED_VALUE=need_value,
        ACC=tl_acc,
        BLOCK=block,
        BLOCK_C=block_c,
    )
    return value, slope


def grid_gradient(grad_output: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    """``sum_c grad_output[:, c] * slope[:, :, c]``: (N, H_out, W_out, 2) in the slope's dtype.

    Args:
        grad_output: (N, C, H_out, W_out), any strides and float dtype.
        slope: (2, N, C, H_out, W_out), contiguous (as :func:`fit` returns it).
    """
    mod = impl()
    n, c, h_out, w_out = grad_output.shape
    out = torch.zeros((n, h_out, w_out, 2), dtype=slope.dtype, device=slope.device)
    m = n * h_out * w_out
    if m == 0 or c == 0:
        return out
    slope = slope.contiguous()
    _, tl_acc = _acc(slope.dtype)
    block, block_c = _blocks(c, slope.device)
    mod.grid_grad_kernel[(mod.triton.cdiv(m, block),)](
        grad_output,
        slope,
        out,
        m,
        c,
        w_out,
        h_out * w_out,
        *grad_output.stride(),
        slope.stride(0),
        ACC=tl_acc,
        BLOCK=block,
        BLOCK_C=block_c,
    )
    return out


def offsets(seed: torch.Tensor, num_aux: int, n: int, h_out: int, w_out: int) -> torch.Tensor:
    """The standard-normal offsets that :func:`fit` draws with ``seed``: (K - 1, 2, N, H_out, W_out) float32,
    on the seed's device."""
    mod = impl()
    m = n * h_out * w_out
    z = torch.empty((num_aux, 2, n, h_out, w_out), dtype=torch.float32, device=seed.device)
    if m:
        block = 256
        mod.offsets_kernel[(mod.triton.cdiv(m, block),)](seed, z, m, NUM_AUX=num_aux, BLOCK=block)
    return z
