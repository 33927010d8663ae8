"""Photometric augmentation: identity when off, blur keeps the mean and removes detail, per-channel jitter,
exposure, saturation and cast shadows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training.augment import PhotometricSpec, gaussian_blur, photometric, saturate, shadow_masks
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


def test_exposure_is_one_gain_for_all_channels_and_clips_highlights(signs: torch.Tensor) -> None:
    out = photometric(signs, PhotometricSpec(exposure_jitter=0.5), torch.Generator().manual_seed(2))
    assert out.min() >= 0 and out.max() <= 255
    unclipped = (signs > 5) & (out < 254.5)
    ratio = torch.where(unclipped, out / signs.clamp_min(1), torch.nan).flatten(1)
    gain = ratio.nanmedian(dim=1).values  # (B,) one gain per image, whatever the channel
    assert (ratio - gain.unsqueeze(1)).abs().nan_to_num().amax() < 1e-3
    assert gain.log().std() > 0.2
    brightened = gain > 1.3
    assert bool(brightened.any())
    assert bool((out[brightened] == 255).float().mean() > (signs[brightened] >= 255).float().mean())


def test_saturation_keeps_luma_and_zero_makes_grey(signs: torch.Tensor) -> None:
    b = signs.shape[0]
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    grey = saturate(signs, torch.zeros(b))
    assert torch.allclose(grey[:, 0], grey[:, 1]) and torch.allclose(grey[:, 1], grey[:, 2])
    half = saturate(signs, torch.full((b,), 0.5))
    assert torch.allclose((half * weights).sum(1), (signs * weights).sum(1), atol=1e-3)
    chroma = lambda x: (x - (x * weights).sum(1, keepdim=True)).abs().mean()  # noqa: E731
    assert torch.isclose(chroma(half), 0.5 * chroma(signs), rtol=1e-4)
    assert torch.allclose(saturate(signs, torch.ones(b)), signs, atol=1e-3)


def test_shadow_darkens_one_side_of_a_straight_edge() -> None:
    generator = torch.Generator().manual_seed(5)
    chosen = torch.tensor([True] * 31 + [False])
    masks = shadow_masks(32, 50, generator, min_gain=0.35, chosen=chosen)
    assert masks.shape == (32, 1, 50, 50)
    assert torch.equal(masks[-1], torch.ones(1, 50, 50))
    for mask in masks[:-1, 0]:
        lit, dark = mask.max().item(), mask.min().item()
        assert lit > 0.99 and 0.35 - 1e-4 <= dark <= 0.9 + 1e-4
        assert 0.05 < (mask < (lit + dark) / 2).float().mean() < 0.95  # the edge crosses the frame
        # a straight edge: in the penumbra, the logit of the shadow's weight is a plane in (x, y)
        weight = ((1 - mask) / (1 - dark)).double().flatten()
        soft = (weight > 0.02) & (weight < 0.98)
        assert int(soft.sum()) >= 20
        ys, xs = torch.meshgrid(torch.arange(50.0), torch.arange(50.0), indexing="ij")
        design = torch.stack([xs.flatten(), ys.flatten(), torch.ones(2500)], dim=1).double()[soft]
        logit = torch.logit(weight[soft]).unsqueeze(1)
        fit = torch.linalg.lstsq(design, logit).solution
        assert (design @ fit - logit).abs().max() < 0.05


def test_shadow_probability_and_range(signs: torch.Tensor) -> None:
    batch = signs.repeat(8, 1, 1, 1)
    out = photometric(batch, PhotometricSpec(shadow_prob=0.5), torch.Generator().manual_seed(4))
    assert out.min() >= 0 and bool((out <= batch + 1e-4).all())  # shadows only darken
    shadowed = (batch - out).amax(dim=(1, 2, 3)) > 1e-3
    assert 0.3 < shadowed.float().mean().item() < 0.7


def test_new_augmentations_are_off_by_default_and_reproducible(signs: torch.Tensor) -> None:
    assert not PhotometricSpec(shadow_min_gain=0.2).enabled
    spec = PhotometricSpec(exposure_jitter=0.3, saturation_jitter=0.3, shadow_prob=0.5)
    a = photometric(signs, spec, torch.Generator().manual_seed(9))
    assert torch.equal(a, photometric(signs, spec, torch.Generator().manual_seed(9)))
    assert not torch.equal(a, photometric(signs, spec, torch.Generator().manual_seed(10)))
