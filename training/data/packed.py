"""Loader of the packed GTSRB arrays (``gtsrb50_*.npz``: WebP-encoded 50x50 images plus metadata).

The layout is described in the data folder's README: ``image_bytes`` (all WebP files concatenated),
``image_offsets`` (N+1), ``image_codec``, ``labels`` (N,) and, for training files, ``track_uid``; test files
carry ``file_index``. Decoding all 39,209 training images takes about 8 s on one core, so the decoded array
can be cached as ``.npy`` in a cache folder, keyed by the source file's name, size and modification time.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from training.data.dataset import NUM_CLASSES, GtsrbSplit
from training.data.resize import NETWORK_INPUT_SIZE
from training.errors import ConfigError, DataError, TrainingError

_REQUIRED = ("image_bytes", "image_offsets", "labels")


def load_packed(
    path: Path,
    limit: int | None = None,
    *,
    rows: np.ndarray | None = None,
    cache_dir: Path | None = None,
) -> GtsrbSplit:
    """Load a packed ``.npz`` file and decode its images.

    Args:
        path: a ``gtsrb50_{train,test}_{compact,lossless}.npz`` file.
        limit: keep only the first ``limit`` rows (train rows are grouped by class, so this is not a sample of
            all classes; use ``rows`` for that).
        rows: alternatively, the row indices to load, in that order (decodes only those images).
        cache_dir: folder for the decoded-image cache (``<stem>.<size>.<mtime_ns>.images.npy``). A full load
            writes it; any load reads it when present. None disables caching.

    Returns:
        A :class:`GtsrbSplit` with (N, 50, 50, 3) uint8 RGB images; ``track_uid`` is set for training files.

    Raises:
        DataError: the file is missing or unreadable, an array is missing or malformed, a label lies outside
            0..42, or an image does not decode to 50x50 (the message names the file and the row).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: packed GTSRB file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [key for key in _REQUIRED if key not in z.files]
            if missing:
                raise DataError(f"{path}: not a packed GTSRB file (missing array {missing[0]!r})")
            meta = {key: np.asarray(z[key]) for key in z.files if key not in ("image_codec", "image_bytes")}
            labels = _check_labels(path, meta["labels"])
            index = _select_rows(path, labels.shape[0], limit, rows)
            images = _cached_images(path, cache_dir, labels.shape[0]) if cache_dir is not None else None
            if images is not None:
                images = np.array(images if index is None else images[index])
            else:
                blob = np.asarray(z["image_bytes"])
                images = _decode(path, blob, meta["image_offsets"], labels.shape[0], index)
                if cache_dir is not None and index is None:
                    _write_cache(path, cache_dir, images)
    except TrainingError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: cannot read the .npz archive ({exc})") from exc

    track_uid = _track_uid(meta, labels)
    names = _names(meta, labels)
    roi50 = _roi50(path, meta, labels.shape[0])
    if index is not None:
        labels = labels[index]
        track_uid = None if track_uid is None else track_uid[index]
        names = None if names is None else names[index]
        roi50 = None if roi50 is None else roi50[index]
    return GtsrbSplit(
        images=images, labels=labels, track_uid=track_uid, source=str(path), names=names, roi50=roi50
    )


def _roi50(path: Path, arrays: dict[str, np.ndarray], total: int) -> np.ndarray | None:
    """(N, 4) float32 sign boxes in the 50x50 frame, when the file has ``roi50``."""
    if "roi50" not in arrays:
        return None
    roi = np.asarray(arrays["roi50"])
    if roi.shape != (total, 4):
        raise DataError(f"{path}: roi50: expected ({total}, 4), got {roi.shape}")
    return roi.astype(np.float32, copy=False)


def _check_labels(path: Path, raw: np.ndarray) -> np.ndarray:
    """(N,) int64 labels, or DataError naming the first row outside 0..42."""
    if raw.ndim != 1 or not np.issubdtype(raw.dtype, np.integer):
        raise DataError(f"{path}: labels: expected a 1-D integer array, got {raw.shape} {raw.dtype}")
    labels = raw.astype(np.int64, copy=False)
    bad = np.flatnonzero((labels < 0) | (labels >= NUM_CLASSES))
    if bad.size:
        raise DataError(f"{path}: row {bad[0]}: label {labels[bad[0]]} outside 0..{NUM_CLASSES - 1}")
    return labels


def _select_rows(path: Path, total: int, limit: int | None, rows: np.ndarray | None) -> np.ndarray | None:
    """The rows to load as an index array, or None for all rows."""
    if limit is not None and rows is not None:
        raise ConfigError("load_packed: give either limit or rows, not both")
    if limit is not None:
        if limit < 0:
            raise ConfigError(f"limit: expected a non-negative number of rows, got {limit}")
        return None if limit >= total else np.arange(limit)
    if rows is None:
        return None
    index = np.asarray(rows)
    if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer):
        raise ConfigError(f"rows: expected a 1-D integer index array, got {index.shape} {index.dtype}")
    if index.size and (index.min() < 0 or index.max() >= total):
        raise ConfigError(f"rows: indices must lie in 0..{total - 1} for {path}")
    return index.astype(np.int64, copy=False)


def _decode(
    path: Path, blob: np.ndarray, offsets: np.ndarray, total: int, index: np.ndarray | None
) -> np.ndarray:
    """Decode the images ``index`` (all when None) into a (n, 50, 50, 3) uint8 RGB array."""
    offsets = offsets.astype(np.int64, copy=False)
    if blob.ndim != 1 or offsets.shape != (total + 1,) or offsets[0] != 0 or offsets[-1] != blob.shape[0]:
        raise DataError(
            f"{path}: inconsistent arrays ({total} labels, image_offsets {offsets.shape}, "
            f"image_bytes {blob.shape})"
        )
    rows = np.arange(total) if index is None else index
    out = np.empty((len(rows), NETWORK_INPUT_SIZE, NETWORK_INPUT_SIZE, 3), dtype=np.uint8)
    for k, row in enumerate(rows):
        data = blob[offsets[row] : offsets[row + 1]].tobytes()
        try:
            with Image.open(io.BytesIO(data)) as img:
                rgb = np.asarray(img.convert("RGB"))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise DataError(f"{path}: row {row}: cannot decode image ({exc})") from exc
        if rgb.shape != out.shape[1:]:
            raise DataError(f"{path}: row {row}: image is {rgb.shape[1]}x{rgb.shape[0]}, expected 50x50")
        out[k] = rgb
    return out


def _track_uid(arrays: dict[str, np.ndarray], labels: np.ndarray) -> np.ndarray | None:
    if "track_uid" in arrays:
        return np.asarray(arrays["track_uid"]).astype(np.int32, copy=False)
    if "track" in arrays:
        return (labels * 1000 + arrays["track"]).astype(np.int32)
    return None


def _names(arrays: dict[str, np.ndarray], labels: np.ndarray) -> np.ndarray | None:
    """Official image ids without extension (``CCCCC/TTTTT_NNNNN`` or ``NNNNN``), when the file has them."""
    if "track" in arrays and "track_index" in arrays:
        triples = zip(labels, arrays["track"], arrays["track_index"], strict=True)
        return np.array([f"{c:05d}/{t:05d}_{i:05d}" for c, t, i in triples])
    if "file_index" in arrays:
        return np.array([f"{i:05d}" for i in arrays["file_index"]])
    return None


def _cache_path(path: Path, cache_dir: Path) -> Path:
    st = path.stat()
    return Path(cache_dir) / f"{path.stem}.{st.st_size}.{st.st_mtime_ns}.images.npy"


def _cached_images(path: Path, cache_dir: Path, total: int) -> np.ndarray | None:
    """The cached decoded images of ``path`` (memory-mapped, read-only), or None when absent or unusable."""
    cache = _cache_path(path, cache_dir)
    if not cache.is_file():
        return None
    try:
        images = np.load(cache, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    if images.shape != (total, NETWORK_INPUT_SIZE, NETWORK_INPUT_SIZE, 3) or images.dtype != np.uint8:
        return None
    return images


def _write_cache(path: Path, cache_dir: Path, images: np.ndarray) -> None:
    """Write the cache atomically (a temporary file renamed into place, so concurrent ranks are safe)."""
    cache = _cache_path(path, cache_dir)
    tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.save(f, images, allow_pickle=False)
        os.replace(tmp, cache)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"{cache_dir}: cannot write the decoded-image cache ({exc})") from exc
