"""A run on the validation protocol: val.json with alignment figures, and a card with both figure sets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.config import DataConfig, OptimConfig, RunConfig, TrainConfig
from training.export import export_bundle
from training.models import ModelConfig
from training.train import train


def test_validation_and_alignment_figures_reach_the_card(gtsrb_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = TrainConfig(
        model=ModelConfig(model_type="stn", arch="paper", sampler="bilinear", warp_type="affine"),
        data=DataConfig(
            data_dir=str(gtsrb_dir),
            limit_train=240,
            limit_test=64,
            val_fraction=0.2,
            val_seed=0,
            cache_dir=None,
        ),
        optim=OptimConfig(epochs=1, batch_size=32, lr=1e-3, align_weight=1.0, align_target="roi"),
        run=RunConfig(out=str(out), threads=1, log_every=2, plots=False, final_eval=True),
    )
    result = train(config)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert 0.0 <= records[0]["val_iou_median_clean"] <= 1.0
    assert 0.0 <= records[0]["val_outside_clean"] <= 1.0

    val = json.loads((out / "val.json").read_text())
    assert val["test_set"].startswith("validation:")
    assert val["extra"] == {"val_fraction": 0.2, "val_seed": 0}
    for key in ("clean", "perturbed"):
        figures = val["alignment"][key]
        assert 0.0 <= figures["iou_p5"] <= figures["iou_median"] <= 1.0
        assert figures["mean_corner_px"] > 0 and 0.0 <= figures["share_outside_gt_10pct"] <= 1.0
        assert len(figures["per_class"]) == 43
    evaluation = json.loads((out / "eval.json").read_text())
    assert evaluation["num_images"] == 64 and evaluation["alignment"]["clean"]["iou_median"] > 0
    assert result.eval is not None
    from training.evaluate import format_result

    report = format_result(result.eval)
    assert "crop alignment vs the annotated sign box" in report and "IoU clean" in report

    # `evaluate --split validation` rebuilds the same held-out tracks from the checkpoint's config.
    from training.cli import main

    again = tmp_path / "val-again.json"
    args = ["evaluate", "--split", "validation", "--checkpoint", str(out / "model.pt"), "--json", str(again)]
    assert main([*args, "--data-dir", str(gtsrb_dir), "--no-per-class"]) == 0
    rebuilt = json.loads(again.read_text())
    assert rebuilt["num_images"] == val["num_images"] and rebuilt["extra"] == val["extra"]
    assert rebuilt["error_clean"] == val["error_clean"] and rebuilt["alignment"] == val["alignment"]

    bundle = export_bundle(
        out / "model.pt",
        tmp_path / "bundle",
        metrics=out / "eval.json",
        validation=out / "val.json",
        data_dir=gtsrb_dir,
        parity_images=2,
    )
    metrics = json.loads(bundle.json_path.read_text())["metrics"]
    assert metrics["test_error_clean"] == pytest.approx(evaluation["error_clean"])
    assert metrics["validation"]["error_clean"] == pytest.approx(val["error_clean"])
    assert metrics["validation"]["num_images"] == val["num_images"] != metrics["num_images"]
    assert metrics["validation"]["split"] == {"val_fraction": 0.2, "val_seed": 0}
    assert metrics["validation"]["alignment"]["clean"]["iou_median"] == pytest.approx(
        val["alignment"]["clean"]["iou_median"]
    )
    assert metrics["alignment"]["perturbed"]["iou_p5"] == pytest.approx(
        evaluation["alignment"]["perturbed"]["iou_p5"]
    )
    assert "per_class" not in metrics["alignment"]["clean"]  # per class stays in eval.json


def test_the_alignment_loss_needs_the_annotated_boxes(gtsrb_dir: Path, tmp_path: Path) -> None:
    from training.errors import ConfigError

    raw = gtsrb_dir / "raw_sample"
    config = TrainConfig(
        model=ModelConfig(model_type="stn", arch="paper", sampler="bilinear", warp_type="affine"),
        data=DataConfig(data_dir=str(raw), val_fraction=0.0, cache_dir=None),
        optim=OptimConfig(epochs=1, batch_size=8, align_weight=1.0),
        run=RunConfig(out=str(tmp_path / "run"), threads=1, plots=False, final_eval=False),
    )
    with pytest.raises(ConfigError, match="roi50"):
        train(config)
