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
