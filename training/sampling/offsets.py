"""Random auxiliary offsets of linearized multi-sampling, and the spread they have.

Convention: offsets are in the normalized coordinates of ``grid_sample`` ([-1, 1] spans the input, x then y).
One *input pixel* is ``2 / W_in`` (x) and ``2 / H_in`` (y) and one *output pixel* ``2 / W_out`` and
``2 / H_out`` in these units, whatever ``align_corners`` (the authors' convention).

Each auxiliary offset is the sum of two independent centred Gaussians per axis: the offset noise, std
``offset_std`` output pixels (default 0.25, the authors' ``0.5 / W_out`` in normalized units), and the
push-away jitter, std ``push_std`` input pixels (default 1, the authors' ``2 / W_in``). A sum of independent
centred Gaussians is one centred Gaussian whose variance is the sum, so both are drawn as one normal draw
with the combined std (same distribution, half the random numbers).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

DEFAULT_OFFSET_STD = 0.25
"""Auxiliary offset noise, in output pixels (the authors' ``noise_strength=0.5`` times ``1 / W_out``)."""

DEFAULT_PUSH_STD = 1.0
"""Push-away jitter, in input pixels (the authors' ``least_offset = 2 / W_in``)."""


@dataclass(frozen=True)
class OffsetSpread:
    """Per-axis standard deviation of one auxiliary offset, in normalized coordinates.

    Attributes:
        x: std along x (normalized units; one input pixel is ``2 / W_in``).
        y: std along y (normalized units; one input pixel is ``2 / H_in``).
    """

    x: float
    y: float

    def in_input_pixels(self, in_size: tuple[int, int], align_corners: bool) -> tuple[float, float]:
        """The spread in input pixels, (sigma_y, sigma_x), with ``grid_sample``'s pixel size for
        ``align_corners`` (``(W_in - 1) / 2`` pixels per normalized unit when True, ``W_in / 2`` when
        False)."""
        h_in, w_in = in_size
        if align_corners:
            return self.y * max(h_in - 1, 0) / 2.0, self.x * max(w_in - 1, 0) / 2.0
        return self.y * h_in / 2.0, self.x * w_in / 2.0


def offset_spread(
    in_size: tuple[int, int],
    out_size: tuple[int, int],
    offset_std: float | None = None,
    push_std: float | None = None,
) -> OffsetSpread:
    """The std of an auxiliary offset: ``sqrt((2 offset_std / W_out)^2 + (2 push_std / W_in)^2)`` along x.

    Args:
        in_size: (H_in, W_in) of the input, pixels.
        out_size: (H_out, W_out) of the grid, pixels.
        offset_std: offset noise in output pixels; None means ``DEFAULT_OFFSET_STD`` (0.25).
        push_std: push-away jitter in input pixels; None means ``DEFAULT_PUSH_STD`` (1.0).

    Returns:
        The per-axis spread in normalized units. At the defaults and downsampling rate r = W_in / W_out it is
        ``sqrt((0.25 r)^2 + 1)`` input pixels per axis.
    """
    h_in, w_in = in_size
    h_out, w_out = out_size
    noise = DEFAULT_OFFSET_STD if offset_std is None else float(offset_std)
    push = DEFAULT_PUSH_STD if push_std is None else float(push_std)
    return OffsetSpread(
        x=math.hypot(2.0 * noise / max(w_out, 1), 2.0 * push / w_in),
        y=math.hypot(2.0 * noise / max(h_out, 1), 2.0 * push / h_in),
    )


CPU_CHUNK_ELEMENTS = 2**17
"""On CPU the batch is processed in chunks of about this many output elements (N_chunk * C * H_out * W_out),
so that the running sums stay in cache and the temporaries stay small; CUDA uses one chunk."""


def batch_chunks(n: int, elements_per_image: int, device: torch.device) -> list[slice]:
    """Split the batch 0 .. n-1 into chunks of nearly equal size (one chunk on CUDA or for an empty batch).

    Args:
        n: batch size N.
        elements_per_image: C * H_out * W_out.
        device: where the sampling runs.

    Returns:
        Consecutive slices covering range(n).
    """
    if device.type != "cpu" or n == 0:
        return [slice(0, n)]
    per_chunk = max(1, CPU_CHUNK_ELEMENTS // max(1, elements_per_image))
    count = -(-n // per_chunk)
    size = -(-n // count)
    return [slice(start, min(n, start + size)) for start in range(0, n, size)]


def auxiliary_offsets(
    shape: tuple[int, int, int, int],
    num_aux: int,
    spread: OffsetSpread,
    *,
    generator: torch.Generator | None,
    dtype: torch.dtype,
    device: torch.device,
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Draw the auxiliary offsets one batch chunk and one auxiliary point at a time (never all at once).

    This defines the random stream: for each chunk of :func:`batch_chunks`, for each auxiliary point
    k = 1 .. K-1, one ``torch.randn((2, N_chunk, H_out, W_out), generator=generator, dtype=dtype)`` (x plane,
    then y plane), scaled by the spread.

    Args:
        shape: (N, C, H_out, W_out) of the output.
        num_aux: K - 1, the number of auxiliary points per output location.
        spread: per-axis std, normalized units (see :func:`offset_spread`).
        generator: random generator (None: torch's default generator of ``device``).
        dtype: dtype of the offsets (the accumulation dtype: float32 for half inputs).
        device: device of the offsets.

    Yields:
        ``(rows, offset)`` for each chunk and auxiliary point: the batch slice and a (2, N_chunk, H_out,
        W_out) tensor, [0] the x offsets and [1] the y offsets, normalized.
    """
    n, c, h_out, w_out = shape
    for rows in batch_chunks(n, c * h_out * w_out, device):
        for _ in range(num_aux):
            z = torch.randn(
                (2, rows.stop - rows.start, h_out, w_out), generator=generator, dtype=dtype, device=device
            )
            z[0].mul_(spread.x)
            z[1].mul_(spread.y)
            yield rows, z
