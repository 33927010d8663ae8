"""One entry point: load the train or test split from whatever the data folder holds."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from training.data.dataset import GtsrbSplit
from training.data.official import find_official_root, load_official_test, load_official_training
from training.data.packed import load_packed
from training.errors import ConfigError, DataError

Split = Literal["train", "test"]
Variant = Literal["compact", "lossless"]


def packed_file(data_dir: Path, split: Split, variant: Variant | None = None) -> Path | None:
    """The packed file ``gtsrb50_<split>_<variant>.npz`` in ``data_dir``, or None when there is none.

    With ``variant=None`` the lossless file is preferred and the compact one is the fallback (the shared
    folder has the compact training file and both test files, so train picks compact, test lossless).
    """
    variants: tuple[Variant, ...] = ("lossless", "compact") if variant is None else (variant,)
    for v in variants:
        path = Path(data_dir) / f"gtsrb50_{split}_{v}.npz"
        if path.is_file():
            return path
    return None


def load_gtsrb(
    data_dir: Path,
    split: Split,
    variant: Variant | None = None,
    limit: int | None = None,
    cache_dir: Path | None = None,
) -> GtsrbSplit:
    """Load a GTSRB split from a folder of packed arrays or from the official directory layout.

    Packed arrays (``gtsrb50_*.npz`` in ``data_dir``) win when present; otherwise ``data_dir`` must be (or
    hold) an official ``GTSRB/Final_Training`` / ``GTSRB/Final_Test`` tree. ``variant`` applies to packed
    files only.

    Args:
        data_dir: the data folder (see :func:`training.data.location.resolve_data_dir`).
        split: ``"train"`` or ``"test"``.
        variant: ``"compact"`` (lossy WebP q92) or ``"lossless"``; None prefers lossless, then compact.
        limit: keep only the first ``limit`` rows (source order).
        cache_dir: folder for the decoded-image cache of packed files (None: no cache).

    Returns:
        The split; images (N, 50, 50, 3) uint8 RGB.

    Raises:
        ConfigError: bad ``split`` or ``variant``.
        DataError: the folder is missing, holds no GTSRB data of that split, or the data is malformed.
    """
    if split not in get_args(Split):
        raise ConfigError(f"split: expected 'train' or 'test', got {split!r}")
    if variant is not None and variant not in get_args(Variant):
        raise ConfigError(f"variant: expected 'compact', 'lossless' or None, got {variant!r}")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: GTSRB data folder not found")
    packed = packed_file(data_dir, split, variant)
    if packed is not None:
        return load_packed(packed, limit, cache_dir=cache_dir)
    part = "Final_Training" if split == "train" else "Final_Test"
    if find_official_root(data_dir, part) is not None:
        loader = load_official_training if split == "train" else load_official_test
        return loader(data_dir, limit)
    wanted = f"gtsrb50_{split}_{variant or '{lossless,compact}'}.npz"
    raise DataError(f"{data_dir}: no GTSRB {split} data (expected {wanted} or GTSRB/{part}/Images)")
