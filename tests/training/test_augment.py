"""Photometric augmentation: identity when off, blur keeps the mean and removes detail, per-channel jitter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training.augment import PhotometricSpec, gaussian_blur, photometric
from training.data import load_gtsrb


@pytest.fixture(scope="module")
def signs(gtsrb_dir: Path) -> torch.Tensor:
    """(16, 3, 50, 50) float 0..255: real GTSRB test images."""
    split = load_gtsrb(gtsrb_dir, "test", variant="lossless", limit=16)
    return torch.from_numpy(np.ascontiguousarray(split.images)).permute(0, 3, 1, 2).float()


def _detail(images: torch.Tensor) -> torch.Tensor:
    """(B,) mean absolute horizontal difference: a measure of fine detail."""
    return (images[..., 1:] - images[..., :-1]).abs().mean(dim=(1, 2, 3))


def test_off_is_the_identity(signs: torch.Tensor) -> None:
    out = photometric(signs, PhotometricSpec(), torch.Generator().manual_seed(0))
    assert out is signs


def test_zero_sigma_blur_is_the_identity_and_blur_removes_detail(signs: torch.Tensor) -> None:
    b = signs.shape[0]
    assert torch.allclose(gaussian_blur(signs, torch.zeros(b)), signs, atol=1e-4)
    blurred = gaussian_blur(signs, torch.full((b,), 1.5))
    assert blurred.shape == signs.shape
    # the mean is kept (reflect padding moves it a little at the border), detail drops by a lot
    assert torch.allclose(blurred.mean(dim=(1, 2, 3)), signs.mean(dim=(1, 2, 3)), atol=2.0)
    ratio = _detail(blurred) / _detail(signs)
    assert bool((ratio < 0.85).all()) and ratio.mean() < 0.7


def test_blur_probability_chooses_images(signs: torch.Tensor) -> None:
    spec = PhotometricSpec(blur_prob=0.5, blur_max_sigma=1.5)
    out = photometric(signs.repeat(8, 1, 1, 1), spec, torch.Generator().manual_seed(3))
    changed = (out - signs.repeat(8, 1, 1, 1)).abs().amax(dim=(1, 2, 3)) > 1e-3
    assert 0.3 < changed.float().mean().item() < 0.7


def test_colour_jitter_scales_each_channel_and_stays_in_range(signs: torch.Tensor) -> None:
    spec = PhotometricSpec(color_jitter=0.1)
    out = photometric(signs, spec, torch.Generator().manual_seed(1))
    assert out.min() >= 0 and out.max() <= 255
    unclipped = (signs > 5) & (signs < 200)
    ratio = torch.where(unclipped, out / signs.clamp_min(1), torch.nan)
    per_channel = ratio.flatten(2).nanmedian(dim=2).values  # (B, 3): one gain per image and channel
    spread = (ratio.flatten(2) - per_channel.unsqueeze(2)).abs().nan_to_num().amax()
    assert spread < 1e-3
    assert per_channel.std() > 0.03  # gains differ between images and channels


def test_reproducible_with_the_generator(signs: torch.Tensor) -> None:
    spec = PhotometricSpec(color_jitter=0.1, blur_prob=0.5, noise_std=3.0)
    a = photometric(signs, spec, torch.Generator().manual_seed(7))
    b = photometric(signs, spec, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    noisy = photometric(signs, PhotometricSpec(noise_std=3.0), torch.Generator().manual_seed(0))
    inside = (signs > 20) & (signs < 235)
    assert abs((noisy - signs)[inside].std().item() - 3.0) < 0.2
