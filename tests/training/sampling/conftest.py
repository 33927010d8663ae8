"""Fixtures of the sampler tests: a few real GTSRB test images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.training.sampling.gtsrb import load_images

# Spread over the test set (rows are in file order, so these are unrelated signs of many classes).
IMAGE_INDICES = tuple(range(0, 12630, 12630 // 16))[:16]


@pytest.fixture(scope="session")
def gtsrb_images(gtsrb_dir: Path) -> torch.Tensor:
    """16 GTSRB test images, float32 (16, 3, 50, 50) in [0, 1]."""
    return load_images(gtsrb_dir / "gtsrb50_test_lossless.npz", IMAGE_INDICES)
