"""Bundle loading and validation (docs/model-bundle.md); the bundle's geometry against our crop rendering."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from service.bundles import discover, load_bundle, read_card, resolve_default, sha256_file
from service.errors import BundleError
from service.geometry import crop_transform
from service.imaging import preprocess, render_crop
from service.inference import create_session
from tests.service import bundle_factory
from tests.service.conftest import make_settings
from tests.service.helpers import open_rgb


def _factory(models_dir: Path) -> Any:
    settings = make_settings(models_dir)
    return lambda path: create_session(path, settings)


def _edit_card(folder: Path, **changes: Any) -> None:
    card = json.loads((folder / "model.json").read_text())
    card.update(changes)
    (folder / "model.json").write_text(json.dumps(card))


def test_default_bundle_loads_and_probes(model_repo: Path, default_name: str) -> None:
    bundle = load_bundle(model_repo / default_name, _factory(model_repo))
    assert bundle.name == default_name
    assert bundle.sha256 == sha256_file(model_repo / default_name / "model.onnx")
    assert bundle.card.input_size == (50, 50)
    assert len(bundle.card.classes) == 43
    assert bundle.providers[-1] == "CPUExecutionProvider"
    assert bundle.load_seconds > 0


def test_discover_and_default(model_repo: Path, default_name: str, tmp_path: Path) -> None:
    names = discover(model_repo)
    assert default_name in names
    assert resolve_default(model_repo, None, names) == default_name
    assert resolve_default(model_repo, "other", names) == "other"
    assert resolve_default(tmp_path, None, ["b", "c"]) == "b"
    assert discover(tmp_path / "missing") == []


@pytest.mark.parametrize(
    ("breakage", "fragment"),
    [
        ("bad_json", "not valid JSON"),
        ("missing_onnx", "missing"),
        ("corrupt_onnx", "onnxruntime cannot load"),
        ("sha_mismatch", "does not match model.json onnx.sha256"),
        ("schema", "does not match the bundle schema"),
        ("schema_version", "schema_version 2 is not supported"),
        ("name_mismatch", "differs from the bundle folder name"),
        ("path_in_onnx_file", "onnx.file must be a file name"),
        ("wrong_classes_count", "num_classes is 42"),
    ],
)
def test_broken_bundles_are_refused(
    writable_repo: Path, default_name: str, breakage: str, fragment: str
) -> None:
    folder = writable_repo / default_name
    card_path, onnx_path = folder / "model.json", folder / "model.onnx"
    if breakage == "bad_json":
        card_path.write_text('{"schema_version": 1, "name": ')
    elif breakage == "missing_onnx":
        onnx_path.unlink()
    elif breakage == "corrupt_onnx":
        onnx_path.write_bytes(b"\x08\x07garbage, not a protobuf" * 50)
        _edit_card(folder, onnx={"file": "model.onnx", "opset": 17, "sha256": sha256_file(onnx_path)})
    elif breakage == "sha_mismatch":
        _edit_card(folder, onnx={"file": "model.onnx", "opset": 17, "sha256": "0" * 64})
    elif breakage == "schema":
        _edit_card(folder, input={"name": "image"})
    elif breakage == "schema_version":
        _edit_card(folder, schema_version=2)
    elif breakage == "name_mismatch":
        _edit_card(folder, name="someone-else")
    elif breakage == "path_in_onnx_file":
        card = json.loads(card_path.read_text())
        _edit_card(folder, onnx={**card["onnx"], "file": "../model.onnx"})
    elif breakage == "wrong_classes_count":
        _edit_card(folder, num_classes=42)
    with pytest.raises(BundleError) as info:
        load_bundle(folder, _factory(writable_repo))
    assert fragment in info.value.message
    assert info.value.status_code == 422


def test_wrong_output_shapes_are_refused(tmp_path: Path, classes: list[dict[str, Any]]) -> None:
    """A graph whose logits have 42 columns while the card lists 43 classes fails the probe run."""
    folder = bundle_factory.build_bundle(tmp_path, "short-logits", classes, onnx_classes=42)
    with pytest.raises(BundleError) as info:
        load_bundle(folder, _factory(tmp_path))
    assert "output 'logits' has shape (2, 42)" in info.value.message


def test_missing_output_is_refused(writable_repo: Path, default_name: str) -> None:
    folder = writable_repo / default_name
    card = json.loads((folder / "model.json").read_text())
    card["outputs"]["warp"]["name"] = "theta"
    (folder / "model.json").write_text(json.dumps(card))
    with pytest.raises(BundleError, match="graph has no output 'theta'"):
        load_bundle(folder, _factory(writable_repo))


def test_unknown_card_fields_are_kept(writable_repo: Path, default_name: str) -> None:
    folder = writable_repo / default_name
    _edit_card(folder, future_field={"x": 1})
    card = read_card(folder)
    assert card.model_extra is not None and card.model_extra["future_field"] == {"x": 1}


def test_network_crop_matches_our_rendering(tiny_repo: Path, gtsrb_dir: Path) -> None:
    """The bundle's own crop (GridSample in the graph) equals our Pillow rendering of the 50x50 input with the
    predicted warp at the crop's size: the warp convention of docs/model-bundle.md holds end to end.

    Uses the tiny bundle, whose graph samples with plain bilinear (the trained defaults use the Gaussian-
    prefiltered "expected" forward, whose crop is blurred on purpose)."""
    default_name = (tiny_repo / "DEFAULT").read_text(encoding="utf-8").strip()
    bundle = load_bundle(tiny_repo / default_name, _factory(tiny_repo))
    sampler = bundle.card.sampler
    if sampler is not None and (sampler.inference or "bilinear") != "bilinear":
        pytest.skip(f"the bundle's inference forward is {sampler.inference!r}, not plain bilinear sampling")
    side = bundle.card.crop_side
    assert isinstance(side, int)
    paths = sorted((gtsrb_dir / "test_originals").glob("*.png"))[:4]
    inputs = np.stack([preprocess(open_rgb(p)) for p in paths])
    _, warps, crops = bundle.session.run(["logits", "warp", "crop"], {"image": inputs})
    for x, warp, crop in zip(inputs, warps, crops, strict=True):
        small = Image.fromarray(x.transpose(1, 2, 0).astype(np.uint8))
        t = crop_transform(
            warp, image_size=(50, 50), crop_size=side, frame=(50, 50), box=bundle.card.canonical_crop.box
        )
        assert t is not None
        ours = np.asarray(render_crop(small, t.image_from_crop, side), dtype=np.float64)
        theirs = crops_hwc = crop.transpose(1, 2, 0)
        inner = (
            slice(1, -1),
            slice(1, -1),
        )  # Pillow and GridSample treat the outermost half pixel differently
        assert np.abs(ours[inner] - theirs[inner]).max() <= 1.5, crops_hwc.shape
