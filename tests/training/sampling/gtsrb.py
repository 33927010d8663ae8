"""Decode a few GTSRB images from the packed arrays with numpy and Pillow only (no training.data
dependency)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def load_images(path: Path, indices: Sequence[int]) -> torch.Tensor:
    """Images ``indices`` of a ``gtsrb50_*.npz`` file as float32 (B, 3, 50, 50), RGB, values in [0, 1]."""
    with np.load(path, allow_pickle=False) as arrays:
        data, offsets = arrays["image_bytes"], arrays["image_offsets"]
        images = [
            np.asarray(Image.open(io.BytesIO(data[offsets[i] : offsets[i + 1]].tobytes())).convert("RGB"))
            for i in indices
        ]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
