"""No train/serve skew: the service's preprocessing feeds the committed bundles exactly what training and
evaluation fed the model, and the logits agree.

Training and `python -m training evaluate` read the packed 50x50 arrays, which were made from the original
images by Pillow's bilinear resize; the service resizes uploads itself (service.imaging.preprocess). Both
paths run through the same ONNX graph here, on real original-resolution GTSRB test images.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from service.imaging import preprocess
from training.data import RESIZE_METHOD, load_packed

NUM_IMAGES = 40


def _bundles(repo_root: Path) -> list[Path]:
    models = repo_root / "models"
    if not (models / "DEFAULT").is_file():
        pytest.fail("models/DEFAULT is missing: the trained default bundles are not committed", pytrace=False)
    return sorted(p.parent for p in models.glob("*/model.json"))


def _originals(gtsrb_dir: Path) -> list[tuple[Path, int]]:
    folder = gtsrb_dir / "test_originals"
    with (folder / "GT-test_originals.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter=";"))
    picked = rows[:: max(1, len(rows) // NUM_IMAGES)][:NUM_IMAGES]
    return [(folder / row["Filename"], int(row["ClassId"])) for row in picked]


def test_service_preprocessing_matches_training_inputs_and_logits(repo_root: Path, gtsrb_dir: Path) -> None:
    originals = _originals(gtsrb_dir)
    rows = np.array([int(path.stem) for path, _ in originals])
    packed = load_packed(gtsrb_dir / "gtsrb50_test_lossless.npz", rows=rows)
    # What the training package's evaluation feeds the model: (N, 50, 50, 3) uint8 -> (N, 3, 50, 50) float.
    training_inputs = packed.images.transpose(0, 3, 1, 2).astype(np.float32)
    service_inputs = np.stack([preprocess(Image.open(path)) for path, _ in originals])
    np.testing.assert_array_equal(service_inputs, training_inputs)
    np.testing.assert_array_equal(packed.labels, [label for _, label in originals])

    for bundle in _bundles(repo_root):
        card = json.loads((bundle / "model.json").read_text())
        resize = card["input"]["resize"]
        assert {k: resize[k] for k in RESIZE_METHOD} == RESIZE_METHOD, bundle.name
        session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
        served = session.run(["logits"], {"image": service_inputs})[0]
        trained = session.run(["logits"], {"image": training_inputs})[0]
        np.testing.assert_allclose(served, trained, rtol=0, atol=1e-5)
        accuracy = float((served.argmax(1) == packed.labels).mean())
        assert accuracy >= 0.95, f"{bundle.name}: only {accuracy:.2%} of {len(rows)} real test images right"
