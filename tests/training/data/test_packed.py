"""The packed-array loader on the real files, its cache, and its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.training.data.conftest import write_packed
from training.data import GtsrbSplit, load_gtsrb, load_packed
from training.errors import ConfigError, DataError


def _check_split(split: GtsrbSplit, n: int) -> None:
    assert split.images.shape == (n, 50, 50, 3)
    assert split.images.dtype == np.uint8
    assert split.labels.shape == (n,)
    assert split.labels.dtype == np.int64
    assert split.labels.min() >= 0
    assert split.labels.max() <= 42
    assert len(split) == n


def test_packed_train_rows_have_tracks(gtsrb_dir: Path) -> None:
    split = load_packed(gtsrb_dir / "gtsrb50_train_compact.npz", limit=64)
    _check_split(split, 64)
    assert split.track_uid is not None
    assert split.track_uid.dtype == np.int32
    # Train rows start with class 20 (Train.csv order), track 0, indices 0..29.
    assert (split.labels == 20).all()
    np.testing.assert_array_equal(split.track_uid // 1000, split.labels)
    assert split.names is not None
    assert split.names[0] == "00020/00000_00000"
    assert split.names[30] == "00020/00001_00000"
    # Real images, not blank: a sign has contrast.
    assert split.images.reshape(64, -1).std(axis=1).min() > 5


def test_packed_test_lossless_and_compact_agree(gtsrb_dir: Path) -> None:
    lossless = load_packed(gtsrb_dir / "gtsrb50_test_lossless.npz", limit=50)
    compact = load_packed(gtsrb_dir / "gtsrb50_test_compact.npz", limit=50)
    _check_split(lossless, 50)
    assert lossless.track_uid is None
    np.testing.assert_array_equal(lossless.labels, compact.labels)
    np.testing.assert_array_equal(lossless.labels[:3], [16, 1, 38])  # GT-final_test.csv, first rows
    mse = np.mean((lossless.images.astype(np.float64) - compact.images) ** 2)
    assert 30 < 10 * np.log10(255**2 / mse) < 45  # lossy q92 is close (README: 36.8 dB), but not identical
    assert lossless.names is not None
    assert lossless.names[7] == "00007"


def test_rows_pick_those_images(gtsrb_dir: Path) -> None:
    path = gtsrb_dir / "gtsrb50_test_lossless.npz"
    head = load_packed(path, limit=10)
    picked = load_packed(path, rows=np.array([7, 2, 9]))
    np.testing.assert_array_equal(picked.images, head.images[[7, 2, 9]])
    np.testing.assert_array_equal(picked.labels, head.labels[[7, 2, 9]])


def test_load_gtsrb_picks_the_files(gtsrb_dir: Path) -> None:
    train = load_gtsrb(gtsrb_dir, "train", limit=5)
    test = load_gtsrb(gtsrb_dir, "test", limit=5)
    assert train.source.endswith("gtsrb50_train_compact.npz")
    assert test.source.endswith("gtsrb50_test_lossless.npz")
    assert load_gtsrb(gtsrb_dir, "test", "compact", limit=5).source.endswith("gtsrb50_test_compact.npz")
    with pytest.raises(DataError, match=r"gtsrb50_train_lossless\.npz"):
        load_gtsrb(gtsrb_dir, "train", "lossless", limit=5)
    with pytest.raises(ConfigError, match="split"):
        load_gtsrb(gtsrb_dir, "val", limit=5)  # type: ignore[arg-type]


def test_cache_round_trip(small_packed_train: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    plain = load_packed(small_packed_train)
    first = load_packed(small_packed_train, cache_dir=cache)
    files = list(cache.glob("*.npy"))
    assert len(files) == 1
    st = small_packed_train.stat()
    assert files[0].name == f"train40.{st.st_size}.{st.st_mtime_ns}.images.npy"
    second = load_packed(small_packed_train, cache_dir=cache)
    limited = load_packed(small_packed_train, limit=7, cache_dir=cache)
    for split in (first, second):
        np.testing.assert_array_equal(split.images, plain.images)
        assert split.images.flags.writeable
    np.testing.assert_array_equal(limited.images, plain.images[:7])
    # A corrupt cache file is ignored, not trusted.
    files[0].write_bytes(b"not a npy file")
    np.testing.assert_array_equal(load_packed(small_packed_train, cache_dir=cache).images, plain.images)


def test_subset_keeps_rows_aligned(small_packed_train: Path) -> None:
    split = load_packed(small_packed_train)
    idx = np.array([39, 0, 31])
    sub = split.subset(idx)
    np.testing.assert_array_equal(sub.images, split.images[idx])
    assert sub.track_uid is not None
    assert split.track_uid is not None
    np.testing.assert_array_equal(sub.track_uid, split.track_uid[idx])
    assert sub.names is not None
    assert list(sub.names) == ["00020/00001_00009", "00020/00000_00000", "00020/00001_00001"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing\.npz: packed GTSRB file not found"):
        load_packed(tmp_path / "missing.npz")


def test_not_an_npz(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"bad\.npz: cannot read"):
        load_packed(bad)


def test_missing_array(tmp_path: Path) -> None:
    path = tmp_path / "nolabels.npz"
    np.savez(path, image_bytes=np.zeros(3, np.uint8), image_offsets=np.array([0, 3]))
    with pytest.raises(DataError, match="missing array 'labels'"):
        load_packed(path)


def test_label_43(small_packed_train: Path, tmp_path: Path) -> None:
    with np.load(small_packed_train) as z:
        labels = z["labels"].copy()
    labels[5] = 43
    path = write_packed(small_packed_train, tmp_path / "label43.npz", 40, labels=labels)
    with pytest.raises(DataError, match=r"label43\.npz: row 5: label 43 outside 0\.\.42"):
        load_packed(path)


def test_undecodable_image(small_packed_train: Path, tmp_path: Path) -> None:
    with np.load(small_packed_train) as z:
        blob, offsets = z["image_bytes"].copy(), z["image_offsets"]
    blob[offsets[3] : offsets[4]] = 0  # row 3: zeroed WebP bytes
    path = write_packed(small_packed_train, tmp_path / "broken.npz", 40, image_bytes=blob)
    assert load_packed(path, limit=3).images.shape == (3, 50, 50, 3)  # rows before it still load
    with pytest.raises(DataError, match=r"broken\.npz: row 3: cannot decode image"):
        load_packed(path)


def test_bad_limit_and_rows(small_packed_train: Path) -> None:
    with pytest.raises(ConfigError, match="limit"):
        load_packed(small_packed_train, limit=-1)
    with pytest.raises(ConfigError, match="rows"):
        load_packed(small_packed_train, rows=np.array([40]))
