"""The writer and the reader of the bundle contract agree: a freshly trained tiny model, exported by
``training.export``, loads through the service's own loader (``service.bundles.load_bundle``), probe included,
and its card reads back as written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from service.bundles import load_bundle
from service.contract import parse_card
from training.config import DataConfig, OptimConfig, RunConfig, TrainConfig
from training.data import load_gtsrb
from training.export import export_bundle
from training.models import ModelConfig
from training.train import train


def _session(path: Path) -> Any:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_a_trained_export_loads_in_the_service(gtsrb_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = TrainConfig(
        model=ModelConfig(model_type="stn", arch="paper", sampler="linearized", warp_type="homography"),
        data=DataConfig(
            data_dir=str(gtsrb_dir), limit_train=160, limit_test=32, val_fraction=0.2, cache_dir=None
        ),
        optim=OptimConfig(epochs=1, batch_size=32, lr=1e-3),
        run=RunConfig(out=str(run), threads=1, log_every=100, plots=False, max_steps=3),
    )
    result = train(config)
    assert result.steps == 3 and (run / "eval.json").is_file() and (run / "val.json").is_file()

    folder = tmp_path / "models" / "tiny-roundtrip"
    report = export_bundle(
        run / "model.pt",
        folder,
        version="0.1.0",
        metrics=run / "eval.json",
        validation=run / "val.json",
        data_dir=gtsrb_dir,
        parity_images=4,
    )
    written = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    assert written == report.card
    assert "validation" in written["metrics"]  # the optional entries are exercised too

    bundle = load_bundle(folder, _session)  # card schema, sha256, graph names, probe batch
    assert bundle.name == "tiny-roundtrip" and bundle.version == "0.1.0"
    assert bundle.card == parse_card(written)
    assert bundle.card.metrics == written["metrics"] and bundle.card.training == written["training"]
    assert bundle.card.crop_side == 36 and len(bundle.card.classes) == 43
    assert bundle.card.input_size == (50, 50) and bundle.card.canonical_crop.box == (7, 7, 43, 43)

    # the loaded session answers on real test images as the card declares
    images = load_gtsrb(gtsrb_dir, "test", limit=3).images.transpose(0, 3, 1, 2).astype(np.float32)
    logits, warp, crop = bundle.session.run(None, {bundle.card.input.name: images})
    assert logits.shape == (3, 43) and warp.shape == (3, 3, 3) and crop.shape == (3, 3, 36, 36)
