"""The committed default bundles are what their model cards say: `python -m training evaluate` on each
bundle's checkpoint reproduces the card's test errors on the full GTSRB test set, and the checkpoint's
weights are the ONNX graph's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from training.data import load_gtsrb
from training.evaluate import evaluate_checkpoint
from training.models import ExportModule, load_checkpoint


def _bundles() -> list[Path]:
    models = Path(__file__).resolve().parents[1] / "models"
    return sorted(p.parent for p in models.glob("*/model.json"))


def test_there_are_default_bundles() -> None:
    names = {b.name for b in _bundles()}
    assert len(names) >= 2
    default = (Path(__file__).resolve().parents[1] / "models" / "DEFAULT").read_text().strip()
    assert default in names


@pytest.mark.slow
@pytest.mark.parametrize("bundle", _bundles(), ids=lambda p: p.name)
def test_card_errors_match_evaluate(bundle: Path, gtsrb_dir: Path) -> None:
    card = json.loads((bundle / "model.json").read_text())
    checkpoint = bundle / "checkpoint.pt"
    torch.set_num_threads(2)
    result, _ = evaluate_checkpoint(checkpoint, data_dir=gtsrb_dir, batch_size=512)
    metrics = card["metrics"]
    assert result.num_images == metrics["num_images"] == 12630
    assert result.inference_forward == metrics["inference_forward"] == card["sampler"]["inference"]
    assert result.error_clean == pytest.approx(metrics["test_error_clean"], abs=0.5 / 12630)
    assert result.error_perturbed == pytest.approx(metrics["test_error_perturbed"], abs=0.5 / 12630)
    if "alignment" in metrics:  # cards from 2.0.0 on carry the crop-alignment figures
        assert result.alignment is not None
        for key in ("clean", "perturbed"):
            for name, value in metrics["alignment"][key].items():
                assert result.alignment[key][name] == pytest.approx(value, abs=1e-3), (key, name)


@pytest.mark.slow
@pytest.mark.parametrize("bundle", _bundles(), ids=lambda p: p.name)
def test_onnx_clean_figures_match_the_card(bundle: Path, gtsrb_dir: Path) -> None:
    """The served graph itself (onnxruntime, all 12,630 lossless test images, the service's clean case)
    reproduces the card's clean error and crop alignment."""
    from training.alignment import OUTSIDE_LIMIT, box_corners, outside_fraction, quad_box_iou

    card = json.loads((bundle / "model.json").read_text())
    metrics = card["metrics"]
    if "alignment" not in metrics:
        pytest.skip("a card from before 2.0.0 has no alignment figures")
    test = load_gtsrb(gtsrb_dir, "test", variant="lossless")
    assert test.roi50 is not None
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    logits, warps = [], []
    for lo in range(0, len(test), 512):
        batch = test.images[lo : lo + 512].transpose(0, 3, 1, 2).astype(np.float32)
        out_logits, out_warp = session.run(["logits", "warp"], {"image": batch})
        logits.append(out_logits)
        warps.append(out_warp)
    pred = np.concatenate(logits).argmax(1)
    error = float((pred != test.labels).mean())
    assert error == pytest.approx(metrics["test_error_clean"], abs=1.5 / 12630)
    # The bundle's warp maps the canonical box's frame pixels to frame pixels (docs/model-bundle.md).
    box = card["canonical_crop"]["box"]
    corners = box_corners(np.array([box], dtype=np.float64))[0]
    pix = np.concatenate(warps).astype(np.float64)
    hom = np.einsum("nij,kj->nki", pix, np.concatenate([corners, np.ones((4, 1))], axis=1))
    quads = hom[..., :2] / hom[..., 2:3]
    iou = quad_box_iou(quads, test.roi50)
    assert float(np.median(iou)) == pytest.approx(metrics["alignment"]["clean"]["iou_median"], abs=2e-3)
    outside = float((outside_fraction(quads) > OUTSIDE_LIMIT).mean())
    assert outside == pytest.approx(metrics["alignment"]["clean"]["share_outside_gt_10pct"], abs=2 / 12630)


@pytest.mark.parametrize("bundle", _bundles(), ids=lambda p: p.name)
def test_checkpoint_is_the_onnx_graph(bundle: Path, gtsrb_dir: Path) -> None:
    images = load_gtsrb(gtsrb_dir, "test", limit=16).images.transpose(0, 3, 1, 2).astype(np.float32)
    module = ExportModule(load_checkpoint(bundle / "checkpoint.pt").model.float().eval()).eval()
    with torch.no_grad():
        logits, warp, _ = module(torch.from_numpy(images))
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_logits, onnx_warp = session.run(["logits", "warp"], {"image": images})
    np.testing.assert_allclose(onnx_logits, logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(onnx_warp, warp.numpy(), atol=1e-4)
