"""Fixtures for the data tests: the official-layout sample and small packed files cut from the real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def raw_sample(gtsrb_dir: Path) -> Path:
    """The folder holding ``GTSRB/`` in the official layout (129 training and 86 test images)."""
    return gtsrb_dir / "raw_sample"


def write_packed(src: Path, dst: Path, rows: int, **overrides: np.ndarray) -> Path:
    """Write the first ``rows`` rows of the packed file ``src`` to ``dst``, replacing ``overrides``."""
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    end = int(arrays["image_offsets"][rows])
    small = {k: v[:rows] for k, v in arrays.items() if v.ndim >= 1 and v.shape[0] == len(arrays["labels"])}
    small["image_offsets"] = arrays["image_offsets"][: rows + 1]
    small["image_bytes"] = arrays["image_bytes"][:end]
    small["image_codec"] = arrays["image_codec"]
    small.update(overrides)
    np.savez(dst, **small)
    return dst


@pytest.fixture(scope="session")
def small_packed_train(gtsrb_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 40 rows of the compact training file, as a packed file of its own."""
    return write_packed(
        gtsrb_dir / "gtsrb50_train_compact.npz", tmp_path_factory.mktemp("packed") / "train40.npz", 40
    )
