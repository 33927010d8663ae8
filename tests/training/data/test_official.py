"""The official-layout loaders on the real sample, against the packed arrays, and their errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.data import (
    RESIZE_METHOD,
    load_gtsrb,
    load_official_test,
    load_official_training,
    load_packed,
    resize_to_network_input,
)
from training.errors import DataError


def test_training_sample(raw_sample: Path) -> None:
    split = load_official_training(raw_sample)
    assert split.images.shape == (129, 50, 50, 3)
    assert split.images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(split.labels, minlength=43), np.full(43, 3))
    assert split.track_uid is not None
    np.testing.assert_array_equal(split.track_uid // 1000, split.labels)
    assert len(np.unique(split.track_uid)) == 129  # first, middle and last track of each class
    # The GTSRB folder itself is accepted as well as its parent.
    again = load_official_training(raw_sample / "GTSRB", limit=4)
    np.testing.assert_array_equal(again.images, split.images[:4])


def test_test_sample_equals_packed_lossless_bit_exactly(raw_sample: Path, gtsrb_dir: Path) -> None:
    split = load_official_test(raw_sample)
    assert split.images.shape == (86, 50, 50, 3)
    assert split.track_uid is None
    assert split.names is not None
    packed = load_packed(gtsrb_dir / "gtsrb50_test_lossless.npz", rows=split.names.astype(np.int64))
    np.testing.assert_array_equal(split.labels, packed.labels)
    # Same resize (Pillow bilinear, whole image) as the packing, lossless codec: identical pixels.
    np.testing.assert_array_equal(split.images, packed.images)


def test_training_sample_matches_packed_compact(raw_sample: Path, gtsrb_dir: Path) -> None:
    split = load_official_training(raw_sample)
    path = gtsrb_dir / "gtsrb50_train_compact.npz"
    with np.load(path) as z:
        labels, track, index = z["labels"], z["track"], z["track_index"]
    triples = zip(labels, track, index, strict=True)
    row_of = {(int(c), int(t), int(i)): r for r, (c, t, i) in enumerate(triples)}
    assert split.names is not None
    keys = [(int(n[:5]), int(n[6:11]), int(n[12:17])) for n in split.names]
    packed = load_packed(path, rows=np.array([row_of[k] for k in keys]))
    np.testing.assert_array_equal(split.labels, packed.labels)
    assert packed.track_uid is not None
    np.testing.assert_array_equal(split.track_uid, packed.track_uid)
    # The training file is lossy WebP q92 of the same resize: close (README: 36.5 dB), not identical.
    err = split.images.astype(np.float64) - packed.images
    psnr = 10 * np.log10(255**2 / np.mean(err**2, axis=(1, 2, 3)))
    assert 10 * np.log10(255**2 / np.mean(err**2)) > 34
    assert psnr.min() > 25


def test_resize_function_is_the_declared_method(raw_sample: Path) -> None:
    path = raw_sample / "GTSRB/Final_Test/Images/00000.png"
    with Image.open(path) as img:
        ours = resize_to_network_input(img)
        reference = np.asarray(img.convert("RGB").resize((50, 50), Image.Resampling.BILINEAR))
        nearest = np.asarray(img.convert("RGB").resize((50, 50), Image.Resampling.NEAREST))
    np.testing.assert_array_equal(ours, reference)
    assert not np.array_equal(ours, nearest)
    assert RESIZE_METHOD == {
        "library": "Pillow",
        "method": "bilinear",
        "width": 50,
        "height": 50,
        "keep_aspect_ratio": False,
    }


def test_load_gtsrb_on_official_layout(raw_sample: Path) -> None:
    assert len(load_gtsrb(raw_sample, "train")) == 129
    assert len(load_gtsrb(raw_sample / "GTSRB", "test", limit=10)) == 10


# --- error cases, on broken copies of the sample ---------------------------------------------------------


@pytest.fixture()
def copy(raw_sample: Path, tmp_path: Path) -> Path:
    """A writable copy of classes 00000-00001 and 10 test images, in the official layout."""
    src, dst = raw_sample / "GTSRB", tmp_path / "GTSRB"
    for cls in ("00000", "00001"):
        shutil.copytree(src / "Final_Training/Images" / cls, dst / "Final_Training/Images" / cls)
    test_dst = dst / "Final_Test/Images"
    test_dst.mkdir(parents=True)
    lines = (src / "Final_Test/Images/GT-final_test.csv").read_text().splitlines()[:11]
    (test_dst / "GT-final_test.csv").write_text("\n".join(lines) + "\n")
    for line in lines[1:]:
        shutil.copy(src / "Final_Test/Images" / line.split(";")[0], test_dst)
    return dst


def test_copy_loads(copy: Path) -> None:
    assert len(load_official_training(copy)) == 6
    assert len(load_official_test(copy)) == 10


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nowhere: GTSRB folder not found"):
        load_official_training(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"no Final_Test/Images folder"):
        load_official_test(tmp_path)
    with pytest.raises(DataError, match=r"no GTSRB train data"):
        load_gtsrb(tmp_path, "train")


def test_missing_csv(copy: Path) -> None:
    (copy / "Final_Training/Images/00001/GT-00001.csv").unlink()
    with pytest.raises(DataError, match=r"00001/GT-00001\.csv: annotation CSV not found"):
        load_official_training(copy)


def test_missing_test_labels(copy: Path) -> None:
    images = copy / "Final_Test/Images"
    (images / "GT-final_test.csv").rename(images / "GT-final_test.test.csv")
    with pytest.raises(DataError, match=r"GT-final_test\.csv: labelled test CSV not found \(only the unlab"):
        load_official_test(copy)


def test_truncated_image(copy: Path) -> None:
    image = copy / "Final_Training/Images/00001/00000_00015.png"
    image.write_bytes(image.read_bytes()[:200])
    with pytest.raises(DataError, match=r"00001/00000_00015\.png: cannot decode image"):
        load_official_training(copy)


def test_missing_image(copy: Path) -> None:
    (copy / "Final_Test/Images/00003.png").unlink()
    with pytest.raises(DataError, match=r"00003\.png: image listed in GT-final_test\.csv line 5 not found"):
        load_official_test(copy)


def test_ppm_names_find_png_files(copy: Path) -> None:
    csv_path = copy / "Final_Test/Images/GT-final_test.csv"
    csv_path.write_text(csv_path.read_text().replace(".png;", ".ppm;"))
    assert len(load_official_test(copy)) == 10


def test_label_43(copy: Path) -> None:
    csv_path = copy / "Final_Test/Images/GT-final_test.csv"
    lines = csv_path.read_text().splitlines()
    fields = lines[3].split(";")
    lines[3] = ";".join([*fields[:-1], "43"])
    csv_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"GT-final_test\.csv: line 4: label 43 outside 0\.\.42"):
        load_official_test(copy)


def test_row_with_missing_fields(copy: Path) -> None:
    csv_path = copy / "Final_Training/Images/00000/GT-00000.csv"
    lines = csv_path.read_text().splitlines()
    lines[2] = ";".join(lines[2].split(";")[:5])
    csv_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"GT-00000\.csv: line 3: expected 8 fields .*got 5"):
        load_official_training(copy)


def test_label_in_wrong_class_folder(copy: Path) -> None:
    csv_path = copy / "Final_Training/Images/00001/GT-00001.csv"
    text = csv_path.read_text().splitlines()
    text[1] = text[1].rsplit(";", 1)[0] + ";7"
    csv_path.write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"GT-00001\.csv: line 2: ClassId 7 in class folder 00001"):
        load_official_training(copy)
