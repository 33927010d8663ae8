"""docs/results.md's issue-5 tables are what ``scripts.results_tables`` makes from the committed JSON."""

from __future__ import annotations

import json
from pathlib import Path

from scripts import results_tables

REPO = Path(__file__).resolve().parents[2]


def test_docs_results_tables_match_the_committed_json() -> None:
    doc = (REPO / "docs" / "results.md").read_text(encoding="utf-8")
    found = results_tables.blocks(doc)
    assert {"alignment", "alignment-sweep", "rotation", "grid"} <= set(found)
    assert results_tables.render(doc) == doc, "run: python -m scripts.results_tables --write"
    assert results_tables.main(["--check"]) == 0


def _write(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def _cell(sampler: str, rate: int, lr: float, successes: int) -> dict[str, object]:
    return {
        "sampler": sampler,
        "rate": rate,
        "lr": lr,
        "num_images": 10,
        "successes": successes,
        "recall": successes / 10,
        "median_px": 0.5,
        "p90_px": 3.0,
        "wall_time_s": 12.0,
        "initial_median_px": 8.0,
    }


def test_tables_from_synthetic_results(tmp_path: Path) -> None:
    config = {"samplers": ["bilinear"], "rates": [1, 8], "lrs": [0.01, 0.1], "num_images": 10}
    config |= {"tune_images": 4, "iterations": 5, "seed": 0}
    _write(
        tmp_path / "alignment" / "study.json",
        {
            "config": config,
            "cells": [_cell("bilinear", 1, 0.1, 9), _cell("bilinear", 8, 0.01, 1)],
            "sweep": [_cell("bilinear", r, lr, 3) for r in (1, 8) for lr in (0.01, 0.1)],
            "chosen_lr": {"bilinear-r1": 0.1, "bilinear-r8": 0.01},
            "wall_time_s": 60.0,
            "environment": {"cpu": "test cpu", "device": "cpu", "torch_threads": 1, "torch": "2.x"},
        },
    )
    _write(tmp_path / "poster.json", {"alignment": {"recall": {"bilinear": {"1": 0.95, "8": None}}}})
    table = results_tables.alignment_table(tmp_path)
    assert "| **bilinear** | **90.0%** (9/10) | **10.0%** (1/10) |" in table
    assert "| poster: bilinear | 95.0% | n/a |" in table
    assert "| **30.0%** | 30.0% |" in results_tables.alignment_sweep_table(tmp_path)
    assert "No rotated-GTSRB runs" in results_tables.rotation_table(tmp_path)

    rotation = {
        "mean_abs_error_deg": 4.0,
        "slope": 0.98,
        "within_15_deg": 0.9,
        "bins": [{"lo": 0.0, "hi": 90.0, "num_images": 8, "mean_abs_error_deg": 4.0, "error": 0.125}],
    }
    evaluation = {"num_images": 8, "error_clean": 0.25, "error_perturbed": 0.125}
    evaluation["extra"] = {"rotation": rotation, "training_wall_time_s": 600.0}
    _write(tmp_path / "rotation" / "stn" / "eval.json", evaluation)
    _write(tmp_path / "rotation" / "stn" / "config.json", {"optim": {"epochs": 3}})
    table = results_tables.rotation_table(tmp_path)
    assert "| **stn** | 3 | 10.0 min | **12.50%** (1/8) | 25.00% | 4.0 deg | 0.98 | 90.0% |" in table
    assert "| stn | 12.50% / 4.0 deg |" in table

    for seed, err in ((0, 0.02), (1, 0.04)):
        run = tmp_path / "grid" / f"stn-linearized-r4-s{seed}"
        ev = {"error_clean": err / 2, "error_perturbed": err, "inference_forward": "expected"}
        _write(run / "eval.json", ev | {"extra": {"training_wall_time_s": 90.0}})
        _write(
            run / "config.json",
            {
                "model": {"model_type": "stn", "sampler": "linearized", "downsampling_rate": 4},
                "optim": {"epochs": 2},
            },
        )
    _write(tmp_path / "grid" / "stn-linearized-r4-s0" / "eval_bilinear.json", {"error_perturbed": 0.05})
    grid = results_tables.grid_table(tmp_path)
    assert "| stn | linearized | not run | not run | 3.00% (n=2) | not run |" in grid
    assert "| stn-linearized-r4-s0 | 1.00% | 2.00% | expected | 5.00% | 2 | 1.5 min |" in grid
    assert "| stn-linearized-r4-s1 | 2.00% | 4.00% | expected |  | 2 | 1.5 min |" in grid

    doc = "text\n<!-- results-tables:grid:begin -->\nold\n<!-- results-tables:grid:end -->\nmore\n"
    fresh = results_tables.render(doc, tmp_path)
    assert fresh.startswith("text\n<!-- results-tables:grid:begin -->\n| model |") and fresh.endswith(
        "more\n"
    )
    assert results_tables.blocks(fresh)["grid"] == grid


def test_collect_copies_runs_into_the_committed_layout(tmp_path: Path) -> None:
    runs, results, figures = tmp_path / "runs", tmp_path / "results", tmp_path / "figures"
    rotated = {"model": {"model_type": "stn-c", "sampler": "bilinear", "downsampling_rate": 1}}
    rotated |= {"data": {"rotation_deg": 90.0}, "run": {"seed": 0}}
    _write(runs / "stn-c" / "config.json", rotated)
    _write(runs / "stn-c" / "eval.json", {"error_perturbed": 0.1})
    (runs / "stn-c" / "plots").mkdir()
    (runs / "stn-c" / "plots" / "angle_vs_rotation.png").write_bytes(b"png")
    plain = {"model": {"model_type": "icstn", "sampler": "linearized", "downsampling_rate": 8}}
    plain |= {"data": {}, "run": {"seed": 2}}
    _write(runs / "linearized-icstn-r8" / "config.json", plain)
    _write(runs / "linearized-icstn-r8" / "eval.json", {"error_perturbed": 0.2})
    _write(runs / "unfinished" / "config.json", plain)  # no eval.json: skipped
    written = results_tables.collect(runs, results, figures)
    assert written == [results / "grid" / "icstn-linearized-r8-s2", results / "rotation" / "stn-c"]
    assert (results / "rotation" / "stn-c" / "eval.json").is_file()
    assert (figures / "rotation_stn-c.png").read_bytes() == b"png"
    assert json.loads((results / "grid" / "icstn-linearized-r8-s2" / "eval.json").read_text()) == {
        "error_perturbed": 0.2
    }
