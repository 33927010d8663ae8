"""Validation split by physical sign track, on the real training track ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.data import split_by_track
from training.errors import ConfigError


@pytest.fixture(scope="module")
def track_uid(gtsrb_dir: Path) -> np.ndarray:
    with np.load(gtsrb_dir / "gtsrb50_train_compact.npz") as z:
        return z["track_uid"]


def test_whole_tracks_and_fractions(track_uid: np.ndarray) -> None:
    train, val = split_by_track(track_uid, 0.1, seed=0)
    assert len(track_uid) == 39209
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(len(track_uid)))
    assert not set(track_uid[train]) & set(track_uid[val])  # no track on both sides
    n_tracks = len(np.unique(track_uid))
    assert n_tracks == 1307
    assert abs(len(np.unique(track_uid[val])) / n_tracks - 0.1) < 0.02
    assert abs(len(val) / len(track_uid) - 0.1) < 0.02
    # Every class keeps tracks for training, and every class gets validation tracks (all have >= 7 tracks).
    assert set(track_uid[train] // 1000) == set(range(43))
    assert set(track_uid[val] // 1000) == set(range(43))
    for cls in range(43):
        own = np.unique(track_uid[track_uid // 1000 == cls])
        own_val = np.unique(track_uid[val][track_uid[val] // 1000 == cls])
        assert len(own_val) == max(1, round(0.1 * len(own)))


def test_deterministic_and_seeded(track_uid: np.ndarray) -> None:
    a = split_by_track(track_uid, 0.2, seed=3)
    b = split_by_track(track_uid, 0.2, seed=3)
    c = split_by_track(track_uid, 0.2, seed=4)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_edge_fractions(track_uid: np.ndarray) -> None:
    train, val = split_by_track(track_uid, 0.0, seed=0)
    assert len(val) == 0
    assert len(train) == len(track_uid)
    train, val = split_by_track(track_uid, 0.99, seed=0)
    assert set(track_uid[train] // 1000) == set(range(43))  # capped: one track per class stays
    assert len(np.unique(track_uid[train])) == 43
    with pytest.raises(ConfigError, match="val_fraction"):
        split_by_track(track_uid, 1.0, seed=0)
