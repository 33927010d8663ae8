"""Export: model.onnx + model.json per docs/model-bundle.md, verified through onnxruntime on real images."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from service.contract import parse_card
from training import geometry
from training.data import RESIZE_METHOD, load_gtsrb
from training.errors import ExportError
from training.evaluate import evaluate_checkpoint
from training.export import (
    ExportModule,
    check_parity,
    export_bundle,
    export_onnx,
    fine_tuning_lineage,
    mark_default,
)
from training.models import ModelConfig, build_model, save_checkpoint
from training.models.common import TransformerClassifier


def _warp_head(model: TransformerClassifier) -> nn.Linear:
    head = model.warp_head()
    assert head is not None
    return head


def _trained_like(cfg: ModelConfig) -> TransformerClassifier:
    """A model whose transformer predicts non-trivial homographies (random small last layer)."""
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        _warp_head(model).weight.normal_(0, 2e-3)
        _warp_head(model).bias.normal_(0, 5e-2)
    return model.eval()


@pytest.fixture(scope="module")
def real_images(gtsrb_dir: Path) -> np.ndarray:
    return load_gtsrb(gtsrb_dir, "test", limit=6).images


@pytest.mark.parametrize("model_type", ["stn", "icstn"])
def test_bundle_matches_the_contract(model_type: str, gtsrb_dir: Path, tmp_path: Path, real_images) -> None:  # type: ignore[no-untyped-def]
    cfg = ModelConfig(model_type=model_type, arch="large", warp_type="homography", warp_n=2)
    model = _trained_like(cfg)
    ckpt = save_checkpoint(
        tmp_path / "model.pt",
        model,
        train_config={"optim": {"epochs": 1}},
        extra={"epoch": 1, "wall_time_s": 12.5, "device": "cpu", "torch_version": str(torch.__version__)},
    )
    metrics, _ = evaluate_checkpoint(ckpt, data_dir=gtsrb_dir, limit=24)
    report = export_bundle(ckpt, tmp_path / "models" / f"{model_type}-x", metrics=metrics, data_dir=gtsrb_dir)
    bundle = tmp_path / "models" / f"{model_type}-x"
    assert sorted(p.name for p in bundle.iterdir()) == ["model.json", "model.onnx"]
    card = json.loads((bundle / "model.json").read_text())
    parsed = parse_card(card)  # the contract's layout and checks; below: what this model puts in it

    assert card["schema_version"] == 1 and card["name"] == f"{model_type}-x" and card["version"] == "1.0.0"
    assert card["created"].endswith("Z")
    assert card["model_type"] == model_type and card["arch"] == "large" and card["warp_type"] == "homography"
    assert card["sampler"] == {
        "train": "linearized",
        "inference": "bilinear",
        "options": {"num_samples": 8, "eval_forward": "bilinear"},
    }
    assert card["downsampling_rate"] == 1 and card["num_classes"] == 43
    assert card["classes"][14] == {"id": 14, "name": "Stop"} and len(card["classes"]) == 43
    assert card["input"]["resize"] == dict(RESIZE_METHOD) and parsed.input_size == (50, 50)
    assert parsed.crop_side == 36 and parsed.canonical_crop.box == (7, 7, 43, 43)
    m = card["metrics"]
    assert (
        m["test_error_clean"] == metrics.error_clean and m["test_error_perturbed"] == metrics.error_perturbed
    )
    assert m["num_images"] == 24 and m["inference_forward"] == "bilinear"
    assert m["perturbation"] == {"scale": 0.25, "translation_scale": 0.25, "seed": 1234}
    assert m["num_parameters"] == sum(p.numel() for p in model.parameters())
    assert card["training"]["wall_time_s"] == 12.5 and card["training"]["epochs"] == 1
    assert card["training"]["config"] == {"optim": {"epochs": 1}}
    assert card["onnx"]["opset"] == 17 and card["onnx"]["file"] == "model.onnx"
    assert card["onnx"]["sha256"] == hashlib.sha256((bundle / "model.onnx").read_bytes()).hexdigest()
    assert report.card == card
    assert report.max_abs_diff["logits"] <= 1e-4 and report.max_abs_diff["warp"] <= 1e-4

    # onnxruntime on real images, another batch size: torch's outputs, warp in the 50x50 pixel frame
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["logits", "warp", "crop"]
    x = real_images[:5].transpose(0, 3, 1, 2).astype(np.float32)
    logits, warp, crop = session.run(None, {"image": x})
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    np.testing.assert_allclose(logits, out.logits.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(warp, geometry.to_pixel_frame(out.warp).numpy(), atol=1e-4, rtol=0)
    assert not np.allclose(warp, np.eye(3), atol=1e-3), "the test should exercise a non-trivial warp"
    assert crop.shape == (5, 3, 36, 36)


def test_identity_warp_in_the_pixel_frame(tmp_path: Path, real_images) -> None:  # type: ignore[no-untyped-def]
    model = build_model(ModelConfig(model_type="cnn", arch="paper", sampler="bilinear")).eval()
    path = tmp_path / "m.onnx"
    export_onnx(ExportModule(model), path)
    x = real_images[:2].transpose(0, 3, 1, 2).astype(np.float32)
    _logits, warp, crop = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"image": x}
    )
    np.testing.assert_allclose(warp, np.broadcast_to(np.eye(3), (2, 3, 3)), atol=1e-5)
    np.testing.assert_allclose(crop, x[:, :, 7:43, 7:43], atol=2e-3)  # the central box, 0..255


def test_parity_failure_is_loud(tmp_path: Path, real_images) -> None:  # type: ignore[no-untyped-def]
    cfg = ModelConfig(model_type="stn", arch="paper", warp_type="affine")
    path = tmp_path / "m.onnx"
    export_onnx(ExportModule(_trained_like(cfg)), path)
    other = build_model(cfg).eval()  # different weights than the exported graph
    with pytest.raises(ExportError, match="onnxruntime and torch differ on logits"):
        check_parity(ExportModule(other), path, real_images)


def test_metrics_from_another_inference_forward_are_refused(gtsrb_dir: Path, tmp_path: Path) -> None:
    ckpt = save_checkpoint(tmp_path / "model.pt", _trained_like(ModelConfig(model_type="stn", arch="paper")))
    metrics, _ = evaluate_checkpoint(ckpt, data_dir=gtsrb_dir, limit=4)
    metrics.inference_forward = "expected"
    with pytest.raises(ExportError, match="inference forward"):
        export_bundle(ckpt, tmp_path / "b", metrics=metrics, data_dir=gtsrb_dir)
    assert not (tmp_path / "b" / "model.onnx").exists()
    with pytest.raises(ExportError, match="metrics file not found"):
        export_bundle(ckpt, tmp_path / "b", metrics=tmp_path / "none.json", data_dir=gtsrb_dir)


def test_mark_default(tmp_path: Path) -> None:
    (tmp_path / "stn-a").mkdir()
    marker = mark_default(tmp_path / "stn-a")
    assert marker == tmp_path / "DEFAULT" and marker.read_text() == "stn-a\n"


@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig(model_type="cnn", arch="paper"),
        ModelConfig(model_type="stn-c", arch="paper", warp_type="affine"),
        ModelConfig(model_type="stn-sl", arch="paper", warp_type="similarity"),
        ModelConfig(model_type="stn", arch="paper", eval_forward="expected"),
        ModelConfig(model_type="icstn", arch="paper", downsampling_rate=4, warp_n=2),
        ModelConfig(model_type="stn", arch="poster", downsampling_rate=8, eval_forward="expected"),
    ],
    ids=["cnn", "stn-c", "stn-sl", "stn-expected", "icstn-r4", "stn-poster-r8"],
)
def test_every_type_exports_with_parity(cfg: ModelConfig, tmp_path: Path, real_images) -> None:  # type: ignore[no-untyped-def]
    model = build_model(cfg).eval()
    if model.warp_head() is not None:
        model = _trained_like(cfg)
    path = tmp_path / "m.onnx"
    export_onnx(ExportModule(model), path)
    worst = check_parity(ExportModule(model), path, real_images)
    assert worst["logits"] <= 1e-4 and worst["warp"] <= 1e-4


def test_card_records_a_fine_tuning_lineage_without_repeating_configs() -> None:
    start = {"path": "a/model.pt", "sha256": "aa", "epochs": 30, "wall_time_s": 100.0, "train_config": {}}
    second = {"path": "b/model.pt", "sha256": "bb", "epochs": 8, "wall_time_s": 10.0, "train_config": {}}
    second["fine_tuned_from"] = start | {"fine_tuned_from": None}
    assert fine_tuning_lineage({}) == {}
    card = fine_tuning_lineage({"fine_tuned_from": second})["fine_tuned_from"]
    assert card == {
        "path": "b/model.pt",
        "sha256": "bb",
        "epochs": 8,
        "wall_time_s": 10.0,
        "fine_tuned_from": {
            "path": "a/model.pt",
            "sha256": "aa",
            "epochs": 30,
            "wall_time_s": 100.0,
            "fine_tuned_from": None,
        },
    }
