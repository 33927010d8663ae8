"""The in-memory form every GTSRB loader returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from training.errors import ShapeError

NUM_CLASSES: Final = 43
"""GTSRB class ids run from 0 to 42."""


@dataclass(frozen=True, eq=False)
class GtsrbSplit:
    """One split of GTSRB as arrays (rows in the source's order, not shuffled).

    Attributes:
        images: (N, 50, 50, 3) uint8, RGB, HWC: the whole image resized to 50x50 (see ``resize.py``).
        labels: (N,) int64 class ids in 0..42.
        track_uid: (N,) int32 ``labels * 1000 + track`` for training data (one value per physical sign track;
            split train/validation by it), None for test data.
        source: the file or folder the split was read from.
        names: optional (N,) str image ids without extension: ``"CCCCC/TTTTT_NNNNN"`` (class folder, track,
            index) for training data, ``"NNNNN"`` (official test file number) for test data.
        roi50: optional (N, 4) float32 annotated sign boxes ``(x0, y0, x1, y1)`` in 50x50-frame pixels
            (edges at integers, the frame spans [0, 50]): GTSRB's ROI scaled by ``50 / width`` and
            ``50 / height``.
    """

    images: np.ndarray
    labels: np.ndarray
    track_uid: np.ndarray | None
    source: str
    names: np.ndarray | None = None
    roi50: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.labels.shape[0] if self.labels.ndim == 1 else -1
        if self.images.ndim != 4 or self.images.shape[1:] != (50, 50, 3) or self.images.dtype != np.uint8:
            raise ShapeError(
                "GtsrbSplit.images: expected (N, 50, 50, 3) uint8, "
                f"got {self.images.shape} {self.images.dtype}"
            )
        if n != self.images.shape[0] or self.labels.dtype != np.int64:
            raise ShapeError(
                f"GtsrbSplit.labels: expected ({self.images.shape[0]},) int64, "
                f"got {self.labels.shape} {self.labels.dtype}"
            )
        for name in ("track_uid", "names"):
            value = getattr(self, name)
            if value is not None and value.shape != (n,):
                raise ShapeError(f"GtsrbSplit.{name}: expected ({n},), got {value.shape}")
        if self.roi50 is not None and (self.roi50.shape != (n, 4) or self.roi50.dtype != np.float32):
            raise ShapeError(
                f"GtsrbSplit.roi50: expected ({n}, 4) float32, got {self.roi50.shape} {self.roi50.dtype}"
            )
        if self.track_uid is not None and self.track_uid.dtype != np.int32:
            raise ShapeError(f"GtsrbSplit.track_uid: expected int32, got {self.track_uid.dtype}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, idx: np.ndarray) -> GtsrbSplit:
        """The rows ``idx`` (an integer index array or a boolean mask of length N), copied, in that order."""
        idx = np.asarray(idx)
        return GtsrbSplit(
            images=self.images[idx],
            labels=self.labels[idx],
            track_uid=None if self.track_uid is None else self.track_uid[idx],
            source=self.source,
            names=None if self.names is None else self.names[idx],
            roi50=None if self.roi50 is None else self.roi50[idx],
        )
