"""scripts/release_tables.py: candidates from val.json or the last epoch record, shipped ones from tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.release_tables import main


def _figures(iou: float, outside: float) -> dict[str, object]:
    return {
        "iou_median": iou,
        "iou_p5": iou - 0.1,
        "share_iou_ge_0_7": 0.9,
        "mean_corner_px": 1.5,
        "share_outside_gt_10pct": outside,
        "per_class": [{"iou_median": iou, "share_outside_gt_10pct": outside}],
    }


def test_tables_from_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    done, stopped = tmp_path / "done", tmp_path / "stopped"
    done.mkdir()
    stopped.mkdir()
    (done / "val.json").write_text(
        json.dumps(
            {
                "num_images": 400,
                "error_clean": 0.01,
                "error_perturbed": 0.02,
                "alignment": {"clean": _figures(0.91, 0.0), "perturbed": _figures(0.86, 0.01)},
            }
        )
    )
    (stopped / "metrics.jsonl").write_text(
        json.dumps({"val_error_clean": 0.03, "val_error_perturbed": 0.04, "val_iou_median_clean": 0.8}) + "\n"
    )
    test = {
        "num_images": 1000,
        "error_clean": 0.004,
        "error_perturbed": 0.006,
        "class_counts": [1000],
        "per_class_clean": [0.004],
        "per_class_perturbed": [0.006],
        "alignment": {"clean": _figures(0.92, 0.002), "perturbed": _figures(0.87, 0.01)},
    }
    (tmp_path / "test.json").write_text(json.dumps(test))
    (tmp_path / "classes.csv").write_text("ClassId,SignName\n0,Stop\n")
    candidates = [
        {"name": "A", "folder": "done", "epochs": 30, "wall_min": 50.0, "test": "test.json"},
        {"name": "B", "folder": "stopped", "epochs": "16 of 30"},
    ]
    (tmp_path / "candidates.json").write_text(json.dumps(candidates))
    assert (
        main(
            [
                "--candidates",
                str(tmp_path / "candidates.json"),
                "--per-class",
                str(tmp_path / "test.json"),
                "--classes",
                str(tmp_path / "classes.csv"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| A | 30 | 50.0 min | 1.00% (4) | 2.00% | 0.910 | 0.810 | 0.860 | 0.00% |" in out
    assert "| B | 16 of 30 |  | 3.00% | 4.00% | 0.800 | - | - | - |" in out
    assert (
        "| A | 0.40% (4) | 0.60% (6) | 0.920 / 0.820 | 90.00% | 1.50 | 0.20% | 0.870 / 0.770 | 1.00% |" in out
    )
    assert "| 0 | Stop | 1000 | 0.40% | 0.60% | 0.920 | 0.870 | 0.20% |" in out
