"""Fixtures shared by the whole suite: where the real GTSRB data lies."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _gtsrb_dir() -> Path:
    env = os.environ.get("GTSRB_DATA_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data" / "gtsrb"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def gtsrb_dir() -> Path:
    """The real GTSRB folder (../shared/data/gtsrb or $GTSRB_DATA_DIR); missing data fails, never skips."""
    path = _gtsrb_dir()
    if not (path / "gtsrb50_test_lossless.npz").is_file():
        pytest.fail(f"GTSRB data not found at {path} (set GTSRB_DATA_DIR)", pytrace=False)
    return path
