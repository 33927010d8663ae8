"""Photometric training augmentation: exposure, saturation and per-channel colour gain, cast shadows,
Gaussian blur and pixel noise.

The IC-STN protocol's geometric perturbation (training/geometry.py) is applied by the model through its
initial warp; this module only changes pixel values, on the whole 50x50 frame, before the model sees it.
All are off by default (``DataConfig``), so the protocol's figures are unchanged unless a config asks.
GTSRB's test tracks differ from the training tracks mostly by lighting (over- and under-exposure, washed-out
colours, hard shadows across the sign), colour cast and motion blur, which is what these imitate. They are
applied in a fixed order: exposure, saturation, colour gain, shadow, blur, noise, then a clamp to 0..255
(so a large exposure gain clips highlights the way an overexposed camera does).
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
        exposure_jitter: std of the log of a gain shared by the 3 channels (0.3 = gains mostly within
            x0.55..x1.8; with the final clamp, bright gains clip the highlights).
        saturation_jitter: std of the log of a saturation factor s: each pixel becomes
            ``luma + s * (pixel - luma)`` (s < 1 washes the colours out, s > 1 deepens them).
        color_jitter: std of each channel's log gain (0.1 = channel gains mostly within +-20%).
        shadow_prob: probability that an image gets a cast shadow: the pixels on one side of a random straight
            edge through the sign (soft over about 1 px) are multiplied by a gain uniform in
            [shadow_min_gain, 0.9].
        shadow_min_gain: darkest shadow gain, in (0, 0.9].
        blur_prob: probability that an image is blurred.
        blur_max_sigma: blur sigma (pixels of the 50x50 frame) is uniform in [0.3, blur_max_sigma].
        noise_std: std of additive Gaussian pixel noise, in 0..255 units.
    """

    color_jitter: float = 0.0
    blur_prob: float = 0.0
    blur_max_sigma: float = 1.5
    noise_std: float = 0.0
    exposure_jitter: float = 0.0
    saturation_jitter: float = 0.0
    shadow_prob: float = 0.0
    shadow_min_gain: float = 0.35

    @property
    def enabled(self) -> bool:
        """True when any augmentation is switched on."""
        strengths = (self.exposure_jitter, self.saturation_jitter, self.color_jitter, self.noise_std)
        return any(v > 0 for v in strengths) or self.blur_prob > 0 or self.shadow_prob > 0


#: ITU-R BT.601 luma weights of R, G, B.
_LUMA = (0.299, 0.587, 0.114)


def saturate(images: Tensor, factor: Tensor) -> Tensor:
    """Scale each image's colour saturation about its per-pixel luma.

    Args:
        images: (B, 3, H, W) float RGB.
        factor: (B,) saturation factors; 1 leaves an image as it is, 0 makes it grey.

    Returns:
        (B, 3, H, W) ``luma + factor * (images - luma)`` (luma: BT.601 weights of the channels; no clamp).
    """
    weights = torch.tensor(_LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    luma = (images * weights).sum(dim=1, keepdim=True)
    return luma + factor.to(images).view(-1, 1, 1, 1) * (images - luma)


def shadow_masks(
    batch: int, size: int, generator: torch.Generator, *, min_gain: float, chosen: Tensor
) -> Tensor:
    """Multiplicative cast-shadow masks: one straight, slightly soft edge per image.

    The edge passes through a point uniform in the central half of the frame (where the sign is) with a
    uniform orientation; the pixels on one side get a gain uniform in [min_gain, 0.9], the other side 1,
    with a logistic transition about 1 px wide. Images not ``chosen`` get an all-ones mask.

    Args:
        batch: B.
        size: H = W of the frame, pixels.
        generator: CPU generator for the draws.
        min_gain: darkest gain, in (0, 0.9].
        chosen: (B,) bool, which images get a shadow.

    Returns:
        (B, 1, size, size) float32 gains in [min_gain, 1], CPU.
    """
    centre = (torch.rand(batch, 2, generator=generator) - 0.5) * (size / 2) + (size - 1) / 2
    angle = torch.rand(batch, generator=generator) * (2 * torch.pi)
    gain = min_gain + torch.rand(batch, generator=generator) * (0.9 - min_gain)
    coords = torch.arange(size, dtype=torch.float32)
    dx = coords.view(1, 1, size) - centre[:, 0].view(-1, 1, 1)  # (B, 1, W)
    dy = coords.view(1, size, 1) - centre[:, 1].view(-1, 1, 1)  # (B, H, 1)
    signed = dx * torch.cos(angle).view(-1, 1, 1) + dy * torch.sin(angle).view(-1, 1, 1)  # px from the edge
    inside = torch.sigmoid(signed / 0.5)  # 1 in the shadow, 0 outside, about 1 px of penumbra
    gain = torch.where(chosen, gain, torch.ones_like(gain)).view(-1, 1, 1)
    return (1.0 - inside * (1.0 - gain)).unsqueeze(1)


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
    if spec.exposure_jitter > 0:
        log_gain = torch.randn(b, 1, 1, 1, generator=generator) * spec.exposure_jitter
        out = out * torch.exp(log_gain).to(out)
    if spec.saturation_jitter > 0:
        factor = torch.exp(torch.randn(b, generator=generator) * spec.saturation_jitter)
        out = saturate(out, factor)
    if spec.color_jitter > 0:
        log_gain = torch.randn(b, 3, 1, 1, generator=generator) * spec.color_jitter
        out = out * torch.exp(log_gain).to(out)
    if spec.shadow_prob > 0:
        chosen = torch.rand(b, generator=generator) < spec.shadow_prob
        masks = shadow_masks(b, out.shape[-1], generator, min_gain=spec.shadow_min_gain, chosen=chosen)
        out = out * masks.to(out)
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
