"""The bundle contract: the published JSON Schema is the model's, committed cards match it, bad cards fail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from service.contract import CardError, ModelCard, make_card, parse_card, sha256_file
from service.contract.schema import PUBLISHED, REGENERATE, render

RESIZE = {"library": "Pillow", "method": "bilinear", "width": 50, "height": 50, "keep_aspect_ratio": False}


def _card(**changes: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "name": "tiny",
        "version": "1.0.0",
        "created": "2026-11-22T03:00:00Z",
        "description": "",
        "model_type": "stn",
        "arch": "paper",
        "warp_type": "affine",
        "sampler": {"train": "bilinear", "inference": "bilinear", "options": {}},
        "downsampling_rate": 1,
        "class_names": ["a", "b", "c"],
        "resize": RESIZE,
        "box": (7, 7, 43, 43),
        "crop_side": 36,
        "onnx_sha256": "0" * 64,
        "opset": 17,
        "metrics": {"test_error_clean": 0.1, "test_error_perturbed": 0.2},
        "training": {"device": "cpu", "epochs": 1},
    }
    return make_card(**(args | changes))


def test_published_schema_is_generated_from_the_card_model(repo_root: Path) -> None:
    published = (repo_root / PUBLISHED).read_text(encoding="utf-8")
    assert published == render(), f"{PUBLISHED} is out of date with service.contract.card: run `{REGENERATE}`"


def test_the_regeneration_command_writes_the_published_text(tmp_path: Path, repo_root: Path) -> None:
    out = tmp_path / "schema.json"
    subprocess.run([sys.executable, "-m", "service.contract.schema", str(out)], check=True, cwd=repo_root)
    assert out.read_text(encoding="utf-8") == render()
    assert json.loads(render())["title"].startswith("model.json")


def test_committed_cards_match_the_contract(repo_root: Path) -> None:
    cards = sorted((repo_root / "models").glob("*/model.json"))
    assert cards, "no committed bundles"
    for path in cards:
        raw = json.loads(path.read_text(encoding="utf-8"))
        card = parse_card(raw)
        assert card.metrics == raw["metrics"] and card.training == raw["training"]  # served as written
        assert card.onnx.sha256 == sha256_file(path.parent / card.onnx.file)


def test_make_card_lays_out_the_graph_interface() -> None:
    card = _card()
    assert list(card) == [
        "schema_version",
        "name",
        "version",
        "created",
        "description",
        "model_type",
        "arch",
        "warp_type",
        "sampler",
        "downsampling_rate",
        "num_classes",
        "classes",
        "input",
        "outputs",
        "canonical_crop",
        "metrics",
        "training",
        "onnx",
    ]
    assert card["classes"] == [{"id": 0, "name": "a"}, {"id": 1, "name": "b"}, {"id": 2, "name": "c"}]
    assert card["input"]["shape"] == [None, 3, 50, 50] and card["input"]["resize"] == RESIZE
    assert card["outputs"]["logits"]["shape"] == [None, 3]
    assert card["outputs"]["crop"]["shape"] == [None, 3, 36, 36]
    assert card["outputs"]["warp"]["frame"] == "50x50 pixel edges, canonical crop -> input"
    assert card["canonical_crop"] == {"frame": [50, 50], "box": [7, 7, 43, 43]}
    assert card["onnx"] == {"file": "model.onnx", "opset": 17, "sha256": "0" * 64}
    assert isinstance(ModelCard.model_validate(card), ModelCard)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"onnx_sha256": "xyz"}, "onnx.sha256"),
        ({"class_names": []}, "classes"),
        ({"box": (43, 7, 7, 43)}, "canonical_crop.box"),
        ({"resize": RESIZE | {"keep_aspect_ratio": True}}, "input.resize.keep_aspect_ratio"),
        ({"metrics": {"test_error_clean": 1.5}}, "metrics.test_error_clean"),
        ({"metrics": {"validation": {"error_perturbed": -0.1}}}, "metrics.validation.error_perturbed"),
        ({"metrics": {"alignment": {"clean": {"iou_median": "high"}}}}, "metrics.alignment.clean.iou_median"),
        ({"training": {"fine_tuned_from": {"epochs": "many"}}}, "training.fine_tuned_from.epochs"),
    ],
)
def test_make_card_refuses_what_the_service_would_refuse(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(CardError, match=message.replace(".", r"\.")):
        _card(**changes)


def test_optional_entries_and_unknown_fields_are_kept() -> None:
    metrics = {
        "test_error_clean": 0.01,
        "alignment": {"clean": {"iou_median": 0.8}, "perturbed": {"iou_median": 0.7}, "reference": "roi50"},
        "validation": {
            "set": "val",
            "num_images": 10,
            "error_clean": 0.0,
            "error_perturbed": 0.1,
            "split": {},
        },
        "something_new": [1, 2],
    }
    card = parse_card(_card(metrics=metrics) | {"extra_field": {"x": 1}})
    assert card.metrics == metrics
    assert card.model_extra == {"extra_field": {"x": 1}}
    with pytest.raises(CardError, match="schema_version 2 is not supported"):
        parse_card(_card() | {"schema_version": 2})
    with pytest.raises(CardError, match="expected a JSON object"):
        parse_card([1])
