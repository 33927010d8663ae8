"""Small real GTSRB batches shared by the model tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def real_batch(gtsrb_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(16, 3, 50, 50) float 0..255 real test images and their (16,) labels."""
    from training.data import load_gtsrb

    split = load_gtsrb(gtsrb_dir, "test", limit=16)
    images = torch.from_numpy(np.ascontiguousarray(split.images)).permute(0, 3, 1, 2).float()
    return images, torch.from_numpy(split.labels)
