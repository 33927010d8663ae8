"""Builds small REAL model bundles (docs/model-bundle.md) for the service tests, with torch.

The tiny model honours the contract: input ``image`` (N, 3, 50, 50) float 0..255, per-image standardisation
inside the graph, a conv localisation head predicting an affine warp in the 50x50 pixel frame (a fixed
non-trivial base warp, scale 0.92, rotation 4 degrees, shift (+1.5, -1.0) px, plus a small input-dependent
part), a GridSample crop (bilinear, zero padding, align_corners=False) of the canonical box, and a tiny
classifier. Outputs: ``logits`` (N, C), ``warp`` (N, 3, 3), ``crop`` (N, 3, 36, 36). torch is imported inside
the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from service.contract import make_card, sha256_file

FRAME = 50
BOX = (7.0, 7.0, 43.0, 43.0)
CROP = 36
BASE_SCALE = 0.92
BASE_ANGLE_DEG = 4.0
BASE_SHIFT = (1.5, -1.0)


def base_warp(
    scale: float = BASE_SCALE, angle_deg: float = BASE_ANGLE_DEG, shift: tuple[float, float] = BASE_SHIFT
) -> np.ndarray:
    """(3, 3) canonical -> input warp, 50x50 frame: rotate and scale about the centre (25, 25), then shift."""
    c = FRAME / 2.0
    a = math.radians(angle_deg)
    rs = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    warp = np.eye(3)
    warp[:2, :2] = rs
    warp[:2, 2] = np.array([c, c]) + np.array(shift) - rs @ np.array([c, c])
    return warp


def read_classes(gtsrb_dir: Path) -> list[dict[str, Any]]:
    """The 43 classes of classes.csv as ``[{"id", "name"}]``."""
    with (gtsrb_dir / "classes.csv").open(newline="", encoding="utf-8") as handle:
        return [{"id": int(row["ClassId"]), "name": row["SignName"]} for row in csv.DictReader(handle)]


def _tiny_model(num_classes: int, seed: int) -> Any:
    import torch
    from torch import nn
    from torch.nn import functional as F

    class TinySTN(nn.Module):
        base: torch.Tensor  # (3, 3) base warp
        bottom: torch.Tensor  # (1, 1, 3) the row [0, 0, 1]
        points: torch.Tensor  # (S*S, 3) homogeneous canonical-frame centres of the crop pixels

        def __init__(self) -> None:
            super().__init__()
            loc_head = nn.Linear(400, 6)
            with torch.no_grad():  # a small input-dependent part around the base warp
                loc_head.weight.mul_(0.02)
                loc_head.bias.zero_()
            self.loc = nn.Sequential(nn.Conv2d(3, 4, 5, stride=5), nn.ReLU(), nn.Flatten(), loc_head)
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.ReLU()
            )
            self.head = nn.Linear(16, num_classes)
            self.register_buffer("base", torch.tensor(base_warp(), dtype=torch.float32), persistent=False)
            self.register_buffer("bottom", torch.tensor([[[0.0, 0.0, 1.0]]]), persistent=False)
            s = (BOX[2] - BOX[0]) / CROP
            u = torch.arange(CROP, dtype=torch.float32)
            ys, xs = torch.meshgrid(BOX[1] + s * (u + 0.5), BOX[0] + s * (u + 0.5), indexing="ij")
            pts = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).reshape(-1, 3)  # (S*S, 3) canonical
            self.register_buffer("points", pts, persistent=False)

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            n = image.shape[0]
            mean = image.mean(dim=(1, 2, 3), keepdim=True)
            std = (image - mean).pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt() + 1e-3
            x = (image - mean) / std
            delta = self.loc(x).reshape(n, 2, 3)
            bottom = (delta[:, :1, :] * 0.0) + self.bottom  # (N, 1, 3) rows [0, 0, 1]
            warp = torch.cat([self.base[:2].unsqueeze(0) + delta, bottom], dim=1)  # (N, 3, 3)
            mapped = torch.matmul(self.points.unsqueeze(0), warp.transpose(1, 2))  # (N, S*S, 3)
            xy = mapped[..., :2] / mapped[..., 2:3]
            grid = (xy * (2.0 / FRAME) - 1.0).reshape(n, CROP, CROP, 2)  # align_corners=False, [-1, 1]
            crop = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            feats = self.features((crop - mean) / std).mean(dim=(2, 3))
            return self.head(feats), warp, crop

    torch.manual_seed(seed)
    return TinySTN().eval()


def build_bundle(
    root: Path,
    name: str,
    classes: list[dict[str, Any]],
    *,
    version: str = "0.0.1-test",
    onnx_classes: int | None = None,
    seed: int = 0,
) -> Path:
    """Export the tiny model to ``root/name/model.onnx`` and write its ``model.json``; returns the folder.

    Args:
        onnx_classes: logits width of the graph; default ``len(classes)`` (a different value makes a bundle
            with wrong output shapes).
    """
    import torch

    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    model = _tiny_model(onnx_classes or len(classes), seed)
    onnx_path = folder / "model.onnx"
    dummy = torch.full((2, 3, FRAME, FRAME), 127.0)
    batch = {0: "N"}
    torch.onnx.export(
        model,
        (dummy,),
        str(onnx_path),
        input_names=["image"],
        output_names=["logits", "warp", "crop"],
        dynamic_axes={"image": batch, "logits": batch, "warp": batch, "crop": batch},
        opset_version=17,
        dynamo=False,
    )
    write_card(folder, classes, version=version)
    return folder


def write_card(
    folder: Path, classes: list[dict[str, Any]], *, version: str, **overrides: Any
) -> dict[str, Any]:
    """Write ``folder/model.json`` for ``folder/model.onnx`` (sha256 computed); returns the card.

    The card is built by the contract (:func:`service.contract.make_card`, as export builds it); ``overrides``
    replace top-level entries afterwards, unvalidated, so a test can write a card that breaks the contract.
    """
    card = make_card(
        name=folder.name,
        version=version,
        created="2026-11-22T03:00:00Z",
        description="tiny untrained STN built by the service tests",
        model_type="stn",
        arch="paper",
        warp_type="affine",
        sampler={"train": "bilinear", "inference": "bilinear", "options": {}},
        downsampling_rate=1,
        class_names=[c["name"] for c in classes],
        resize={
            "library": "Pillow",
            "method": "bilinear",
            "width": FRAME,
            "height": FRAME,
            "keep_aspect_ratio": False,
        },
        box=BOX,
        crop_side=CROP,
        onnx_sha256=sha256_file(folder / "model.onnx"),
        opset=17,
        metrics={"test_error_clean": 0.95, "test_error_perturbed": 0.96, "num_parameters": 2000},
        training={"device": "cpu", "epochs": 0},
    )
    card.update(overrides)
    (folder / "model.json").write_text(json.dumps(card, indent=2), encoding="utf-8")
    return card


def build_repository(root: Path, classes: list[dict[str, Any]]) -> Path:
    """A model repository of two tiny bundles: ``tiny-stn`` (DEFAULT) and ``tiny-stn-b`` (other weights)."""
    root.mkdir(parents=True, exist_ok=True)
    build_bundle(root, "tiny-stn", classes, seed=0)
    build_bundle(root, "tiny-stn-b", classes, seed=1, version="0.0.2-test")
    (root / "DEFAULT").write_text("tiny-stn\n", encoding="utf-8")
    return root


def set_version(folder: Path, version: str) -> None:
    """Change the ``version`` of ``folder/model.json`` (what publishing a new model version does)."""
    card = json.loads((folder / "model.json").read_text())
    card["version"] = version
    (folder / "model.json").write_text(json.dumps(card))


BREAKAGES = ("bad_json", "missing_onnx", "corrupt_onnx", "sha256_mismatch", "wrong_output_shapes")


def break_bundle(
    folder: Path, how: str, scratch: Path | None = None, classes: list[dict[str, Any]] | None = None
) -> None:
    """Break the bundle in ``folder`` one of the :data:`BREAKAGES` ways.

    Args:
        scratch: a temporary folder, for ``wrong_output_shapes`` (which exports a 10-class graph there).
        classes: the card's classes, for ``wrong_output_shapes``.
    """
    card_path, onnx_path = folder / "model.json", folder / "model.onnx"
    card = json.loads(card_path.read_text())
    if how == "bad_json":
        card_path.write_text("{ this is not json")
    elif how == "missing_onnx":
        onnx_path.unlink()
    elif how == "corrupt_onnx":
        onnx_path.write_bytes(b"not an onnx model" * 100)
        card["onnx"]["sha256"] = sha256_file(onnx_path)
        card_path.write_text(json.dumps(card))
    elif how == "sha256_mismatch":
        onnx_path.write_bytes(onnx_path.read_bytes() + b"\x00")
    elif how == "wrong_output_shapes":
        if scratch is None or classes is None:
            raise ValueError("wrong_output_shapes needs a scratch folder and the classes")
        other = build_bundle(scratch / "other", folder.name, classes, onnx_classes=10)
        shutil.copy(other / "model.onnx", onnx_path)
        card["onnx"]["sha256"] = sha256_file(onnx_path)
        card_path.write_text(json.dumps(card))
    else:
        raise ValueError(f"unknown breakage {how!r}; expected one of {BREAKAGES}")
