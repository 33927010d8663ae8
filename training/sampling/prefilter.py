"""Padding and low-pass prefiltering with standard operators, and the "expected" linearized forward.

Everything here exports to ONNX as Pad / Gather (padding), Conv (depthwise separable filter), Mul and
GridSample: the filter taps and the padding indices depend only on the static image sizes, so they are
constants.

Padding modes reproduce what ``grid_sample`` reads outside the image, as discrete pixels:

* "zeros": zero pixels;
* "border": the border pixel repeated (``grid_sample`` clamps the coordinate);
* "reflection": with ``align_corners=True`` mirrored about the border pixel's centre (pixel -1 = pixel 1),
  with ``align_corners=False`` about its outer edge (pixel -1 = pixel 0), as ``grid_sample`` reflects
  coordinates.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from training.sampling.options import SamplerOptions
from training.sampling.tracing import constant, static_sizes


def padding_index(size: int, before: int, after: int, padding_mode: str, align_corners: bool) -> torch.Tensor:
    """Source pixel of each pixel of a padded axis ("border" or "reflection").

    Args:
        size: the axis length in pixels (> 0).
        before: pixels added before the first one.
        after: pixels added after the last one.
        padding_mode: "border" or "reflection".
        align_corners: reflection about pixel centres (True) or pixel edges (False).

    Returns:
        int64 tensor of shape (before + size + after,) with values in [0, size).
    """
    index = torch.arange(-before, size + after, dtype=torch.int64)
    if padding_mode == "border" or size == 1:
        return index.clamp_(0, size - 1)
    if align_corners:
        period = 2 * (size - 1)
        index = index.remainder(period)
        return torch.where(index > size - 1, period - index, index)
    period = 2 * size
    index = index.remainder(period)
    return torch.where(index >= size, period - 1 - index, index)


def pad_image(
    image: torch.Tensor, pad_y: int, pad_x: int, padding_mode: str, align_corners: bool
) -> torch.Tensor:
    """Pad (N, C, H, W) by ``pad_y`` rows and ``pad_x`` columns on each side as ``grid_sample`` would read
    them.

    Returns:
        (N, C, H + 2 pad_y, W + 2 pad_x), same dtype.
    """
    if pad_y == 0 and pad_x == 0:
        return image
    if padding_mode == "zeros":
        return F.pad(image, (pad_x, pad_x, pad_y, pad_y))
    h, w = static_sizes(image, (2, 3))
    if pad_y:
        rows = padding_index(h, pad_y, pad_y, padding_mode, align_corners).to(image.device)
        image = image.index_select(2, rows)
    if pad_x:
        cols = padding_index(w, pad_x, pad_x, padding_mode, align_corners).to(image.device)
        image = image.index_select(3, cols)
    return image


def gaussian_taps(sigma: float) -> list[float]:
    """Normalized taps of a sampled Gaussian of std ``sigma`` pixels, radius ``ceil(3 sigma)``; [1] if 0."""
    if sigma <= 0.0:
        return [1.0]
    radius = max(1, math.ceil(3.0 * sigma))
    taps = [math.exp(-0.5 * (m / sigma) ** 2) for m in range(-radius, radius + 1)]
    total = sum(taps)
    return [t / total for t in taps]


def separable_filter(image: torch.Tensor, taps_y: list[float], taps_x: list[float]) -> torch.Tensor:
    """Depthwise separable 'valid' correlation of (N, C, H, W) with symmetric taps (one Conv per axis).

    Returns:
        (N, C, H - len(taps_y) + 1, W - len(taps_x) + 1), same dtype.
    """
    (channels,) = static_sizes(image, (1,))
    if channels == 0:
        return image[:, :, len(taps_y) - 1 :, len(taps_x) - 1 :]
    # The weights are built from Python lists, so that an ONNX export sees constants of static shape.
    if len(taps_x) > 1:
        weight = constant([[[taps_x]]] * channels, like=image)
        image = F.conv2d(image, weight, groups=channels)
    if len(taps_y) > 1:
        weight = constant([[[[t] for t in taps_y]]] * channels, like=image)
        image = F.conv2d(image, weight, groups=channels)
    return image


def gaussian_prefilter(
    image: torch.Tensor,
    sigma_y: float,
    sigma_x: float,
    padding_mode: str,
    align_corners: bool,
) -> tuple[torch.Tensor, tuple[float, float]]:
    """Gaussian-filter (N, C, H, W) as the padded image ``grid_sample`` reads, over a support extended
    outside.

    For "zeros" and "border" the result covers ``R + 1`` extra pixels on each side (R the kernel radius), so
    that points up to there outside the image get the filtered padded image and points further out get the
    right value from ``grid_sample``'s own padding (0, or constant along the normal). For "reflection" the
    filtered image is itself mirror-symmetric, so no extension is needed.

    Args:
        image: (N, C, H, W).
        sigma_y: std along y, input pixels.
        sigma_x: std along x, input pixels.
        padding_mode: "zeros", "border" or "reflection".
        align_corners: as in ``grid_sample``.

    Returns:
        ``(filtered, (scale_x, scale_y))``: the filtered (N, C, H + 2 E_y, W + 2 E_x) image and the factors
        that map a normalized grid of the original image to the same points in the extended one.
    """
    taps_y, taps_x = gaussian_taps(sigma_y), gaussian_taps(sigma_x)
    radius_y, radius_x = len(taps_y) // 2, len(taps_x) // 2
    extend_y = 0 if padding_mode == "reflection" else radius_y + 1
    extend_x = 0 if padding_mode == "reflection" else radius_x + 1
    padded = pad_image(image, radius_y + extend_y, radius_x + extend_x, padding_mode, align_corners)
    filtered = separable_filter(padded, taps_y, taps_x)
    h, w = static_sizes(image, (2, 3))
    if align_corners:
        scale_x = (w - 1) / (w + 2 * extend_x - 1)
        scale_y = (h - 1) / (h + 2 * extend_y - 1)
    else:
        scale_x = w / (w + 2 * extend_x)
        scale_y = h / (h + 2 * extend_y)
    return filtered, (scale_x, scale_y)


def expected_grid_sample(input: torch.Tensor, grid: torch.Tensor, options: SamplerOptions) -> torch.Tensor:
    """Deterministic expected value of the linearized forward: bilinear sampling of the prefiltered input.

    The linearized forward is the least-squares plane through n = K - 1 bilinear samples at Gaussian offsets
    ``d_k`` (covariance ``Sigma``, see :func:`training.sampling.offsets.offset_spread`), evaluated at the
    sampling point: ``sum_k w_k v_k`` with the fit's weights ``w_k`` (``sum w_k = 1``, ``sum w_k d_k = 0``).
    For a locally quadratic image (Hessian H) its mean is ``I + tr(H E[sum_k w_k d_k d_k^T]) / 2``, and for
    Gaussian offsets ``E[sum_k w_k d_k d_k^T] = (n - 2) / n Sigma`` (the sample mean of the offsets is
    independent of their deviations). So the expected value equals, to second order in the offsets, the image
    blurred by the Gaussian of covariance ``(K - 3) / (K - 1) Sigma`` (5/7 Sigma at K = 8). That is what this
    computes: the discrete input filtered by that sampled Gaussian (reading outside as the padding mode does),
    then sampled bilinearly. docs/sampler.md has the derivation and the measured agreement with the mean of
    many stochastic forwards.

    Args:
        input: (N, C, H_in, W_in), validated.
        grid: (N, H_out, W_out, 2), normalized [-1, 1], x then y.
        options: padding mode, ``align_corners``, and the training forward's K and spreads.

    Returns:
        (N, C, H_out, W_out), the input's dtype.
    """
    h_in, w_in = static_sizes(input, (2, 3))
    h_out, w_out = static_sizes(grid, (1, 2))
    in_size = (h_in, w_in)
    padding_mode, align_corners = options.padding_mode, options.align_corners
    spread = options.spread(in_size, (h_out, w_out))
    sigma_y, sigma_x = spread.in_input_pixels(in_size, align_corners)
    shrink = expected_variance_factor(options.num_samples) ** 0.5
    sigma_y, sigma_x = sigma_y * shrink, sigma_x * shrink
    filtered, (scale_x, scale_y) = gaussian_prefilter(input, sigma_y, sigma_x, padding_mode, align_corners)
    if scale_x != 1.0 or scale_y != 1.0:
        grid = grid * constant([scale_x, scale_y], like=grid)
    return F.grid_sample(
        filtered, grid, mode="bilinear", padding_mode=padding_mode, align_corners=align_corners
    )


def expected_variance_factor(num_samples: int) -> float:
    """``(K - 3) / (K - 1)``: the Gaussian that the expected linearized forward applies has this times the
    covariance of the auxiliary offsets (K = ``num_samples``; derivation in docs/sampler.md)."""
    n = num_samples - 1
    return max(n - 2, 0) / n
