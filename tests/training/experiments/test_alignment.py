"""The alignment study (issue 5, part 3) on a few real GTSRB test images: corner error, targets, recovery of a
known warp, reproducibility, learning-rate choice, config checks and the ``align`` command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from training.cli import main
from training.data.tensors import packed_images
from training.errors import ConfigError, ShapeError
from training.experiments.alignment import (
    CellResult,
    alignment_targets,
    choose_lr,
    corner_error_px,
    run_cell,
    sample_through,
    select_rows,
    true_warps_for,
)
from training.experiments.config import AlignmentConfig
from training.geometry import params_to_matrix, perturbation_warps, rotation_warps

ROWS = (0, 3157, 6314, 9471)  # unrelated signs spread over the test set


@pytest.fixture(scope="module")
def images(gtsrb_dir: Path) -> torch.Tensor:
    """4 GTSRB test images, float32 (4, 3, 50, 50) in [0, 1]."""
    return packed_images(gtsrb_dir / "gtsrb50_test_lossless.npz", ROWS)


def _eye(n: int) -> torch.Tensor:
    return torch.eye(3).expand(n, 3, 3).clone()


def test_corner_error_on_known_warps() -> None:
    eye = _eye(3)
    assert torch.equal(corner_error_px(eye, eye), torch.zeros(3, dtype=torch.float64))
    # a translation by (0.1, -0.05) canonical units moves every corner by 18 * |t| px
    shift = params_to_matrix(torch.tensor([[0.1, -0.05]]), "translation")
    assert corner_error_px(shift, _eye(1)).item() == pytest.approx(18 * math.hypot(0.1, 0.05), rel=1e-6)
    # scaling by s about the centre moves the corners (+-1, +-1) by sqrt(2) |s - 1| canonical units
    scale = params_to_matrix(torch.tensor([[0.1, 0.0, 0.0, 0.0]]), "similarity")
    assert corner_error_px(scale, _eye(1)).item() == pytest.approx(18 * math.sqrt(2) * 0.1, rel=1e-6)
    # a 90-degree rotation moves each corner to its neighbour: 2 canonical units = 36 px
    quarter = rotation_warps(torch.tensor([math.pi / 2], dtype=torch.float64))
    assert corner_error_px(quarter, _eye(1).double()).item() == pytest.approx(36.0, rel=1e-12)
    # symmetric, and a degenerate estimate is an infinite error (never a success)
    warps = perturbation_warps(5, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(corner_error_px(warps, _eye(5)), corner_error_px(_eye(5), warps))
    bad = _eye(1)
    bad[0, 2] = torch.tensor([-1.0, -1.0, 0.0])  # maps a corner to infinity
    assert corner_error_px(bad, _eye(1)).item() == math.inf
    with pytest.raises(ShapeError):
        corner_error_px(_eye(2), _eye(3))


def test_the_bilinear_sample_through_the_true_warp_is_the_target(images: torch.Tensor) -> None:
    warps = perturbation_warps(4, generator=torch.Generator().manual_seed(0))
    for size in (36, 18, 9, 5):
        target = alignment_targets(images, warps, size)
        assert target.shape == (4, 3, size, size)
        assert torch.equal(sample_through(images, warps, size, "bilinear"), target)
        exact = sample_through(images, warps, size, "linearized-exact", torch.Generator().manual_seed(1))
        assert torch.equal(exact, target)  # the authors' fixed_bias forward is exactly bilinear


def test_bilinear_recovers_a_small_known_warp_at_rate_1(images: torch.Tensor) -> None:
    small = perturbation_warps(
        4, scale=0.05, translation_scale=0.05, generator=torch.Generator().manual_seed(5)
    )  # corners move by about 1.3 px
    cell = run_cell(images, small, "bilinear", 1, lr=0.01, iterations=150, seed=0)
    assert cell.initial_median_px > 1.0
    assert cell.recall == 1.0 and max(cell.errors_px) < 0.1, cell.errors_px
    assert cell.size == 36 and cell.num_images == 4 and cell.successes == 4


def test_a_cell_is_reproducible_with_its_seed(images: torch.Tensor) -> None:
    warps = perturbation_warps(4, generator=torch.Generator().manual_seed(2))
    a = run_cell(images, warps, "linearized", 2, lr=0.03, iterations=15, seed=7)
    b = run_cell(images, warps, "linearized", 2, lr=0.03, iterations=15, seed=7)
    c = run_cell(images, warps, "linearized", 2, lr=0.03, iterations=15, seed=8)
    assert a.errors_px == b.errors_px and a.recall == b.recall
    assert a.errors_px != c.errors_px  # the offsets come from the seed
    assert a.to_dict()["errors_px"] == a.errors_px and "errors_px" not in a.summary()


def _cell(lr: float, successes: int) -> CellResult:
    return CellResult("bilinear", 1, 36, lr, 1, 10, successes, successes / 10, 0, 0, 0, 0, 0)


def test_choose_lr_takes_the_best_recall_and_the_smaller_rate_on_ties() -> None:
    assert choose_lr([_cell(0.01, 3), _cell(0.1, 7), _cell(0.3, 5)]) == 0.1
    assert choose_lr([_cell(0.1, 7), _cell(0.03, 7)]) == 0.03
    with pytest.raises(ConfigError):
        choose_lr([])


def test_images_and_warps_are_seeded_and_the_tuning_set_is_disjoint() -> None:
    config = AlignmentConfig(num_images=50, tune_images=20, seed=3)
    rows, tune = select_rows(config)
    again, _ = select_rows(config)
    assert len(rows) == 50 and len(tune) == 20 and not set(rows) & set(tune)
    assert (rows == again).all()
    warps, tune_warps = true_warps_for(config)
    assert warps.shape == (50, 3, 3) and tune_warps.shape == (20, 3, 3)
    assert torch.equal(warps, true_warps_for(config)[0])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"samplers": ("bicubic",)},
        {"rates": (3,)},
        {"num_images": 0},
        {"lrs": (0.0,)},
        {"iterations": 0},
        {"num_images": 12630, "tune_images": 1},
    ],
)
def test_bad_configs_are_config_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        AlignmentConfig(**kwargs)  # type: ignore[arg-type]


def test_align_command_writes_the_study(
    gtsrb_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "alignment"
    argv = ["align", "--num-images", "4", "--tune-images", "2", "--iterations", "3", "--lrs", "0.01,0.03"]
    argv += ["--samplers", "bilinear,linearized", "--rates", "4,8", "--threads", "1", "--seed", "1"]
    argv += ["--data-dir", str(gtsrb_dir), "--cache-dir", "none", "--out", str(out)]
    argv += ["--figure", str(tmp_path / "recall.png")]
    assert main(argv) == 0
    study = json.loads((out / "study.json").read_text())
    assert study["config"]["num_images"] == 4 and len(study["cells"]) == 4 and len(study["sweep"]) == 8
    assert set(study["chosen_lr"]) == {"bilinear-r4", "bilinear-r8", "linearized-r4", "linearized-r8"}
    assert study["command"].startswith("python -m training align --num-images 4 --tune-images 2")
    assert study["environment"]["torch_threads"] == 1
    cell = json.loads((out / "cells" / "linearized-r8.json").read_text())
    assert cell["size"] == 5 and len(cell["errors_px"]) == 4
    assert (tmp_path / "recall.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "alignment: 4 cells" in capsys.readouterr().out
    assert main(["align", "--samplers", "nope", "--data-dir", str(gtsrb_dir)]) == 2
