"""Photometric training augmentation: per-channel colour gain, Gaussian blur and pixel noise.

The IC-STN protocol's geometric perturbation (training/geometry.py) is applied by the model through its
initial warp; this module only changes pixel values, on the whole 50x50 frame, before the model sees it.
All three are off by default (``DataConfig``), so the protocol's figures are unchanged unless a config asks.
GTSRB's test tracks differ from the training tracks mostly by lighting, colour cast and motion blur, which
is what these imitate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

#: Half-width of the blur kernel in pixels (covers 3 sigma at the largest sigma this module allows).
_MAX_RADIUS = 5


@dataclass(frozen=True)
class PhotometricSpec:
    """How strongly to augment; every field at 0 makes :func:`photometric` the identity.

    Attributes:
        color_jitter: std of each channel's log gain (0.1 = channel gains mostly within +-20%).
        blur_prob: probability that an image is blurred.
        blur_max_sigma: blur sigma (pixels of the 50x50 frame) is uniform in [0.3, blur_max_sigma].
        noise_std: std of additive Gaussian pixel noise, in 0..255 units.
    """

    color_jitter: float = 0.0
    blur_prob: float = 0.0
    blur_max_sigma: float = 1.5
    noise_std: float = 0.0

    @property
    def enabled(self) -> bool:
        """True when any augmentation is switched on."""
        return self.color_jitter > 0 or self.blur_prob > 0 or self.noise_std > 0


def gaussian_blur(images: Tensor, sigma: Tensor) -> Tensor:
    """Blur each image with its own isotropic Gaussian (separable, reflect padding).

    Args:
        images: (B, C, H, W) float.
        sigma: (B,) standard deviations in pixels, each in [0, _MAX_RADIUS / 3]; 0 leaves the image as it is.

    Returns:
        (B, C, H, W) blurred images, same dtype and device.
    """
    b, c, h, w = images.shape
    taps = torch.arange(-_MAX_RADIUS, _MAX_RADIUS + 1, device=images.device, dtype=images.dtype)
    safe = sigma.to(images).clamp_min(1e-3).view(b, 1)
    kernel = torch.exp(-0.5 * (taps.view(1, -1) / safe) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # (B, K); sigma -> 0 gives a delta
    kernel = kernel.repeat_interleave(c, dim=0)  # (B*C, K)
    flat = F.pad(images.reshape(1, b * c, h, w), (_MAX_RADIUS,) * 4, mode="reflect")
    flat = F.conv2d(flat, kernel.view(b * c, 1, 1, -1), groups=b * c)
    flat = F.conv2d(flat, kernel.view(b * c, 1, -1, 1), groups=b * c)
    return flat.view(b, c, h, w)


def photometric(images: Tensor, spec: PhotometricSpec, generator: torch.Generator) -> Tensor:
    """Apply the augmentations of ``spec`` to a batch.

    Args:
        images: (B, 3, 50, 50) float RGB in 0..255 (the model's input scale).
        spec: strengths; :attr:`PhotometricSpec.enabled` False returns ``images`` unchanged.
        generator: CPU generator for every random draw (so runs are reproducible on any device).

    Returns:
        (B, 3, 50, 50) float in 0..255.
    """
    if not spec.enabled:
        return images
    b = images.shape[0]
    out = images
    if spec.color_jitter > 0:
        log_gain = torch.randn(b, 3, 1, 1, generator=generator) * spec.color_jitter
        out = out * torch.exp(log_gain).to(out)
    if spec.blur_prob > 0:
        chosen = torch.rand(b, generator=generator) < spec.blur_prob
        top = min(max(spec.blur_max_sigma, 0.3), _MAX_RADIUS / 3)
        sigma = 0.3 + torch.rand(b, generator=generator) * (top - 0.3)
        sigma = torch.where(chosen, sigma, torch.zeros_like(sigma))
        if bool(chosen.any()):
            out = gaussian_blur(out, sigma.to(out.device))
    if spec.noise_std > 0:
        noise = torch.randn(out.shape, generator=generator) * spec.noise_std
        out = out + noise.to(out)
    return out.clamp(0.0, 255.0)
