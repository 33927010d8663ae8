"""GTSRB images as torch tensors, for the sampler tests, the experiments and the benchmarks.

The one module of ``training.data`` that imports torch; the package's ``__init__`` does not import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from training.data.packed import load_packed


def packed_images(path: str | Path, rows: Sequence[int]) -> torch.Tensor:
    """Rows ``rows`` of a ``gtsrb50_*.npz`` file, in that order, as float32 (B, 3, 50, 50) RGB in [0, 1]."""
    images = load_packed(Path(path), rows=np.asarray(rows, dtype=np.int64)).images  # (B, 50, 50, 3) uint8
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
