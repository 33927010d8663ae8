"""Every plot writes a valid PNG of the expected size, from real GTSRB crops and labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.data import load_class_names, load_packed
from training.errors import ShapeError
from training.plots import (
    plot_angle_vs_rotation,
    plot_class_crops,
    plot_confusion_matrix,
    plot_training_curves,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def test_rows(gtsrb_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The first 900 real test images (every class occurs by row 830), (N, 3, 50, 50) float, and labels."""
    split = load_packed(gtsrb_dir / "gtsrb50_test_lossless.npz", limit=900)
    assert len(np.unique(split.labels)) == 43
    return split.images.transpose(0, 3, 1, 2).astype(np.float32), split.labels


def _check_png(path: Path, width: int, height: int) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert abs(img.width - width) <= 0.1 * width, img.size
        assert abs(img.height - height) <= 0.1 * height, img.size
        pixels = np.asarray(img.convert("L"))
    assert pixels.std() > 10  # something was drawn


def test_training_curves(tmp_path: Path) -> None:
    history: list[dict[str, object]] = []
    for e in range(10):
        entry: dict[str, object] = {"epoch": e, "train_loss": 2.0 / (e + 1), "train_error": 0.5 / (e + 1)}
        if e % 2:  # validation every other epoch: series with gaps
            entry |= {"val_loss": 2.2 / (e + 1), "val_error": 0.6 / (e + 1)}
        history.append(entry | {"lr": 0.01})
    history.append({"epoch": 10, "val_error_perturbed": 0.05, "note": "final"})
    out = plot_training_curves(history, tmp_path / "sub" / "curves.png")
    assert out == tmp_path / "sub" / "curves.png"
    _check_png(out, 1200, 450)
    with pytest.raises(ShapeError, match="no numeric loss or error"):
        plot_training_curves([{"epoch": 1, "lr": 0.1}], tmp_path / "empty.png")


def test_class_crops(tmp_path: Path, gtsrb_dir: Path, test_rows: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = test_rows
    crops = images[:, :, 7:43, 7:43]  # the canonical crop of the identity warp
    names = load_class_names(gtsrb_dir)
    out = plot_class_crops(
        crops, labels, names, tmp_path / "crops.png", title="identity warp, 900 test images"
    )
    _check_png(out, 1400, 620)
    # Small crops (rate 8) and classes without crops also work.
    small = crops[:, :, ::8, ::8][:, :, :5, :5]
    _check_png(plot_class_crops(small[:50], labels[:50], names, tmp_path / "small.png"), 1400, 620)
    with pytest.raises(ShapeError):
        plot_class_crops(crops[:, :2], labels, names, tmp_path / "bad.png")


def test_angle_vs_rotation(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    applied = np.repeat(np.arange(-90, 91, 15), 40).astype(np.float64)
    predicted = 0.8 * applied + rng.normal(0, 5, applied.shape)
    out = plot_angle_vs_rotation(applied, predicted, tmp_path / "angles.png", "STN, rotated GTSRB")
    _check_png(out, 650, 600)
    continuous = rng.uniform(-90, 90, 500)
    _check_png(plot_angle_vs_rotation(continuous, continuous, tmp_path / "cont.png", "cont"), 650, 600)


def test_confusion_matrix(tmp_path: Path, gtsrb_dir: Path, test_rows: tuple[np.ndarray, np.ndarray]) -> None:
    _, labels = test_rows
    predictions = labels.copy()
    predictions[::40] = (labels[::40] + 1) % 43  # 23 errors
    out = plot_confusion_matrix(labels, predictions, load_class_names(gtsrb_dir), tmp_path / "cm.png", "demo")
    _check_png(out, 1300, 1200)
    with pytest.raises(ShapeError, match="class ids"):
        plot_confusion_matrix(labels, predictions + 43, load_class_names(gtsrb_dir), tmp_path / "bad.png")
