"""Train/validation split by physical sign track.

GTSRB has about 30 images of every physical sign (one *track*, the sign seen from an approaching car), so a
random split of images would put near-duplicates on both sides and make validation error meaningless. Here
whole tracks go to one side, per class, so every class keeps tracks on the training side.
"""

from __future__ import annotations

import numpy as np

from training.errors import ConfigError, ShapeError


def split_by_track(track_uid: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices into training and validation rows, whole tracks at a time.

    For every class (``track_uid // 1000``) the class's tracks are shuffled with ``seed`` and the first
    ``round(val_fraction * n_tracks)`` go to validation, capped at ``n_tracks - 1`` so that every class keeps
    at least one track for training. With ``val_fraction > 0`` a class with two or more tracks gives at least
    one track to validation. The result depends only on ``track_uid``, ``val_fraction`` and ``seed``.

    Args:
        track_uid: (N,) integer track ids ``label * 1000 + track`` (:attr:`GtsrbSplit.track_uid`).
        val_fraction: fraction of each class's tracks for validation, in [0, 1).
        seed: seed of the shuffle.

    Returns:
        ``(train_idx, val_idx)``: sorted int64 row indices; disjoint, together all N rows.
    """
    uid = np.asarray(track_uid)
    if uid.ndim != 1 or not np.issubdtype(uid.dtype, np.integer):
        raise ShapeError(f"split_by_track: expected (N,) integer track_uid, got {uid.shape} {uid.dtype}")
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction: expected a value in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    tracks = np.unique(uid)
    val_tracks: list[np.ndarray] = []
    for cls in np.unique(tracks // 1000):
        own = tracks[tracks // 1000 == cls]
        n_val = round(val_fraction * len(own))
        if val_fraction > 0 and len(own) >= 2:
            n_val = max(n_val, 1)
        n_val = min(n_val, len(own) - 1)
        val_tracks.append(rng.permutation(own)[:n_val])
    is_val = np.isin(uid, np.concatenate(val_tracks) if val_tracks else np.empty(0, uid.dtype))
    return np.flatnonzero(~is_val).astype(np.int64), np.flatnonzero(is_val).astype(np.int64)
