"""Rotated GTSRB (issue 5, part 2): random rotations, the rotated evaluation, a tiny rotated training."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from training import geometry
from training.config import DataConfig, OptimConfig, RunConfig, TrainConfig, load_config_file
from training.data import load_gtsrb
from training.errors import ConfigError, ShapeError
from training.evaluate import (
    evaluate_arrays,
    evaluate_checkpoint,
    fixed_rotations,
    rotation_seed,
    rotation_study,
    rotation_summary,
)
from training.models import ModelConfig, build_model
from training.train import train

REPO = Path(__file__).resolve().parents[2]


def test_random_rotations_are_uniform_seeded_and_read_back() -> None:
    warps, angles = geometry.random_rotations(20000, 30.0, generator=torch.Generator().manual_seed(0))
    assert warps.shape == (20000, 3, 3) and warps.dtype == torch.float32 and angles.dtype == torch.float64
    assert angles.min() >= -30.0 and angles.max() <= 30.0
    assert abs(angles.mean().item()) < 0.5  # std of the mean: 30 / sqrt(3 * 20000) = 0.12
    assert angles.std().item() == pytest.approx(30.0 / math.sqrt(3.0), rel=0.02)  # uniform's std
    counts = torch.histc(angles, bins=6, min=-30.0, max=30.0)
    assert (counts - 20000 / 6).abs().max() < 200  # flat histogram
    read = torch.rad2deg(geometry.rotation_angle(warps.double()))
    assert torch.allclose(read, -angles, atol=1e-4)  # the warp rotates content by +a ...
    undo = geometry.compose(warps.double(), geometry.rotation_warps(torch.deg2rad(angles)))
    assert torch.allclose(
        undo, torch.eye(3, dtype=torch.float64).expand(20000, 3, 3), atol=1e-6
    )  # ... +a undoes it
    again, same = geometry.random_rotations(20000, 30.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, warps) and torch.equal(same, angles)


def test_zero_rotation_is_the_identity() -> None:
    warps, angles = geometry.random_rotations(7, 0.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(warps, torch.eye(3).expand(7, 3, 3)) and not angles.any()
    with pytest.raises(ConfigError):
        geometry.random_rotations(3, -1.0)
    with pytest.raises(ConfigError):
        DataConfig(rotation_deg=200.0)


def test_a_rotated_crop_of_a_real_image_is_the_rotated_crop(gtsrb_dir: Path) -> None:
    split = load_gtsrb(gtsrb_dir, "test", limit=3)
    image = torch.from_numpy(split.images).permute(0, 3, 1, 2).double()
    crop = geometry.warp_images(image, torch.eye(3, dtype=torch.float64).expand(3, 3, 3), 36)
    # rotating the content by +90 degrees (clockwise on screen) maps pixel centres to pixel centres
    quarter = geometry.rotation_warps(torch.full((3,), -math.pi / 2, dtype=torch.float64))
    rotated = geometry.warp_images(image, quarter, 36)
    assert torch.allclose(rotated, torch.rot90(crop, k=-1, dims=(2, 3)), atol=1e-6)
    # and through random_rotations at 90 degrees: the content turns by the drawn angle
    warps, angles = geometry.random_rotations(3, 90.0, generator=torch.Generator().manual_seed(4))
    back = geometry.warp_images(
        geometry.warp_images(image, warps.double(), 50, extent=geometry.FRAME_EXTENT),
        geometry.rotation_warps(torch.deg2rad(angles)),
        24,
        extent=24 / 36,
    )  # undo the rotation: the centre of the crop comes back (the rim was cut by the frame)
    centre = geometry.warp_images(
        image, torch.eye(3, dtype=torch.float64).expand(3, 3, 3), 24, extent=24 / 36
    )
    assert (back - centre).abs().mean() < 0.1 * (centre - centre.mean()).abs().mean()


def test_rotate_frames_turns_the_pixels_about_the_crop_centre(gtsrb_dir: Path) -> None:
    image = torch.from_numpy(load_gtsrb(gtsrb_dir, "test", limit=2).images).permute(0, 3, 1, 2).float()
    assert torch.allclose(geometry.rotate_frames(image, torch.eye(3).expand(2, 3, 3)), image, atol=1e-3)
    # +90 degrees (clockwise on screen) about the frame's centre maps pixel centres to pixel centres
    quarter = geometry.rotation_warps(torch.full((2,), -math.pi / 2))
    turned = geometry.rotate_frames(image, quarter)
    assert torch.allclose(turned, torch.rot90(image, k=-1, dims=(2, 3)), atol=1e-3)
    # 45 degrees uncovers the frame's corners (zeros) and keeps the centre's content
    eighth = geometry.rotation_warps(torch.full((2,), -math.pi / 4))
    rotated = geometry.rotate_frames(image, eighth)
    assert rotated[:, :, :3, :3].abs().max() == 0 and rotated[:, :, 20:30, 20:30].abs().min() > 0
    # cropping the rotated frame is cropping the original through the rotation (one more resampling)
    direct = geometry.warp_images(image, eighth, 36)
    twice = geometry.warp_images(rotated, torch.eye(3).expand(2, 3, 3), 36)
    upright = geometry.warp_images(image, torch.eye(3).expand(2, 3, 3), 36)
    assert (twice - direct).abs().mean() < 0.15 * (direct - upright).abs().mean()
    with pytest.raises(ShapeError):
        geometry.rotate_frames(image[:, :, :36, :36], quarter)


def test_fixed_rotations_are_the_rotation_study_angles() -> None:
    warps, angles = fixed_rotations(50, max_deg=90.0, seed=1234)
    old = (torch.rand(50, generator=torch.Generator().manual_seed(1234), dtype=torch.float64) * 2 - 1) * 90
    assert np.array_equal(angles, old.numpy())  # the refactor kept rotation_study's stream
    assert torch.equal(warps, geometry.rotation_warps(torch.deg2rad(-old)).float())
    # a prefix of a longer draw is the shorter draw, so a 1000-image figure shows the evaluation's first 1000
    assert np.array_equal(
        fixed_rotations(200, max_deg=90.0, seed=9)[1][:50], fixed_rotations(50, max_deg=90.0, seed=9)[1]
    )
    assert rotation_seed(1234) == 1235


def test_rotated_evaluation_feeds_the_fixed_rotations(gtsrb_dir: Path) -> None:
    split = load_gtsrb(gtsrb_dir, "test", limit=20)
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(model_type="stn", arch="paper", sampler="bilinear", warp_type="similarity")
    )
    plain, _ = evaluate_arrays(model, split.images, split.labels, seed=5)
    assert plain.perturbation == {"scale": 0.25, "translation_scale": 0.25, "seed": 5}
    result, arrays = evaluate_arrays(
        model,
        split.images,
        split.labels,
        scale=0.0,
        translation_scale=0.0,
        seed=5,
        rotation_deg=45.0,
        keep_crops=True,
    )
    assert result.perturbation == {
        "scale": 0.0,
        "translation_scale": 0.0,
        "seed": 5,
        "rotation_deg": 45.0,
        "rotation_seed": 6,
    }
    expected, _ = fixed_rotations(20, max_deg=45.0, seed=6)
    # the rotation is in the pixels: a fresh transformer (identity) keeps the identity initial warp and crops
    # the rotated frames
    assert torch.allclose(torch.from_numpy(arrays.warps_perturbed), torch.eye(3).expand(20, 3, 3), atol=1e-6)
    frames = torch.from_numpy(split.images).permute(0, 3, 1, 2).float()
    identity = torch.eye(3).expand(20, 3, 3)
    rotated_crops = geometry.warp_images(geometry.rotate_frames(frames, expected), identity, 36)
    assert arrays.crops_perturbed is not None
    assert torch.allclose(torch.from_numpy(arrays.crops_perturbed), rotated_crops, atol=1e-2)
    applied, predicted = rotation_study(model, split.images, max_deg=45.0, seed=6)
    assert np.array_equal(applied, fixed_rotations(20, max_deg=45.0, seed=6)[1])
    assert np.allclose(predicted, 0.0, atol=1e-4)


def test_rotation_summary() -> None:
    applied = np.linspace(-90, 90, 181)
    perfect = rotation_summary(applied, applied, wrong=np.zeros(181, dtype=bool))
    assert perfect["mean_abs_error_deg"] == 0 and perfect["within_15_deg"] == 1.0
    assert perfect["slope"] == pytest.approx(1.0) and perfect["intercept_deg"] == pytest.approx(0.0, abs=1e-9)
    assert [b["num_images"] for b in perfect["bins"]] == [59, 60, 62] and perfect["bins"][0]["error"] == 0.0
    blind = rotation_summary(applied, np.zeros(181))
    assert blind["slope"] == pytest.approx(0.0, abs=1e-12) and blind["correlation"] == 0.0
    assert blind["mean_abs_error_deg"] == pytest.approx(np.abs(applied).mean())
    assert "error" not in blind["bins"][0]
    wrapped = rotation_summary(np.array([-179.0, 0.0]), np.array([179.0, 0.0]))
    assert wrapped["mean_abs_error_deg"] == pytest.approx(1.0)  # 2 degrees apart across +-180


def test_tiny_rotated_training_rotates_its_batches_and_its_evaluation(
    gtsrb_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[torch.Tensor] = []
    real = geometry.random_rotations

    def spy(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        warps, angles = real(*args, **kwargs)
        drawn.append(angles)
        return warps, angles

    rotated: list[tuple[torch.Tensor, torch.Tensor]] = []
    real_rotate = geometry.rotate_frames

    def rotate_spy(images: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
        rotated.append((images, rotations))
        return real_rotate(images, rotations)

    monkeypatch.setattr(geometry, "random_rotations", spy)
    monkeypatch.setattr(geometry, "rotate_frames", rotate_spy)
    out = tmp_path / "run"
    config = TrainConfig(
        model=ModelConfig(model_type="stn-c", arch="paper", sampler="bilinear", warp_type="similarity"),
        data=DataConfig(
            data_dir=str(gtsrb_dir),
            limit_train=96,
            limit_test=40,
            val_fraction=0.0,
            cache_dir=None,
            perturbation_scale=0.0,
            translation_scale=0.0,
            rotation_deg=45.0,
        ),
        optim=OptimConfig(epochs=1, batch_size=32, lr=1e-3),
        run=RunConfig(out=str(out), threads=1, plots=True),
    )
    result = train(config)
    assert result.steps == 3
    batches = drawn[: result.steps]  # the training batches come first, then the evaluation's draws
    assert all(a.shape == (32,) and a.abs().max() <= 45.0 and a.abs().max() > 0 for a in batches)
    # every training batch's pixels (what STN-C's first layers see) are rotated by that batch's angles
    for angles, (frames, warps) in zip(batches, rotated[: result.steps], strict=True):
        assert frames.shape == (32, 3, 50, 50)
        assert torch.allclose(warps, geometry.rotation_warps(torch.deg2rad(-angles)).float(), atol=1e-6)
    evaluation = json.loads((out / "eval.json").read_text())
    assert evaluation["perturbation"]["rotation_deg"] == 45.0
    summary = evaluation["extra"]["rotation"]
    assert summary["num_images"] == 40 and sum(b["num_images"] for b in summary["bins"]) == 40
    assert (out / "plots" / "angle_vs_rotation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again, _ = evaluate_checkpoint(out / "model.pt", data_dir=gtsrb_dir, limit=40)  # reads rotation_deg
    assert again.perturbation == evaluation["perturbation"]
    assert again.error_perturbed == evaluation["error_perturbed"]


def test_the_rotation_grid_config_resolves() -> None:
    from training.cli import load_grid

    base, axes, fixed = load_grid("rotation")
    assert axes == {"model.model_type": ["stn", "stn-c", "stn-sl"]}
    from training.config import apply_overrides

    config = apply_overrides(load_config_file(base), fixed)
    assert config.data.rotation_deg == 90.0 and config.data.perturbation_scale == 0.0
    assert config.model.warp_type == "similarity" and config.model.arch == "paper"
    assert config.model.downsampling_rate == 1 and config.run.plots
    assert replace(config.model, model_type="stn-c").has_transformer
