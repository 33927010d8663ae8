"""Evaluation: clean and perturbed error on real test images, reproducible, per class, eval mode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from training.data import load_gtsrb
from training.evaluate import EvalResult, evaluate_arrays, evaluate_checkpoint, format_result
from training.models import ModelConfig, build_model, save_checkpoint
from training.models.common import TransformerClassifier


def _warp_head(model: TransformerClassifier) -> nn.Linear:
    head = model.warp_head()
    assert head is not None
    return head


@pytest.fixture(scope="module")
def test_split(gtsrb_dir: Path):  # type: ignore[no-untyped-def]
    return load_gtsrb(gtsrb_dir, "test", limit=48)


def _model(sampler: str = "linearized") -> TransformerClassifier:
    torch.manual_seed(0)
    model = build_model(ModelConfig(model_type="stn", arch="paper", sampler=sampler, warp_type="affine"))
    with torch.no_grad():
        _warp_head(model).weight.normal_(0, 1e-4)
    return model


def test_figures_are_reproducible_and_independent_of_batch_size(test_split) -> None:  # type: ignore[no-untyped-def]
    model = _model().train()
    a, arr_a = evaluate_arrays(model, test_split.images, test_split.labels, batch_size=48, seed=7)
    b, arr_b = evaluate_arrays(model, test_split.images, test_split.labels, batch_size=5, seed=7)
    assert model.training, "the model's mode is restored"
    assert a.error_clean == b.error_clean and a.error_perturbed == b.error_perturbed
    np.testing.assert_array_equal(arr_a.pred_perturbed, arr_b.pred_perturbed)
    np.testing.assert_allclose(arr_a.warps_perturbed, arr_b.warps_perturbed, atol=1e-6)
    _, arr_c = evaluate_arrays(model, test_split.images, test_split.labels, seed=8)
    assert not np.allclose(arr_a.warps_perturbed, arr_c.warps_perturbed), "the seed changes the perturbations"
    assert a.inference_forward == "bilinear" and a.sampler == "linearized"
    assert a.perturbation == {"scale": 0.25, "translation_scale": 0.25, "seed": 7}


def test_per_class_figures_add_up(test_split) -> None:  # type: ignore[no-untyped-def]
    model = _model("bilinear")
    result, arrays = evaluate_arrays(model, test_split.images, test_split.labels, keep_crops=True)
    assert sum(result.class_counts) == 48 == result.num_images
    wrong = sum((e or 0.0) * n for e, n in zip(result.per_class_clean, result.class_counts, strict=True))
    assert wrong == pytest.approx(result.error_clean * 48)
    assert (result.error_clean * 48) == pytest.approx(np.sum(arrays.pred_clean != test_split.labels))
    for k, n in enumerate(result.class_counts):
        assert (result.per_class_clean[k] is None) == (n == 0)
    assert arrays.crops_perturbed is not None and arrays.crops_perturbed.shape == (48, 3, 36, 36)
    assert arrays.crops_perturbed.min() >= 0 and arrays.crops_perturbed.max() <= 255.5
    text = format_result(result, [f"class {i}" for i in range(43)])
    assert "clean error" in text and "perturbed error" in text and "seed 1234" in text


def test_zero_perturbation_equals_clean(test_split) -> None:  # type: ignore[no-untyped-def]
    result, arrays = evaluate_arrays(
        _model(), test_split.images, test_split.labels, scale=0.0, translation_scale=0.0
    )
    assert result.error_clean == result.error_perturbed
    np.testing.assert_array_equal(arrays.pred_clean, arrays.pred_perturbed)


def test_evaluate_checkpoint_and_json(gtsrb_dir: Path, tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "model.pt", _model())
    result, _ = evaluate_checkpoint(path, data_dir=gtsrb_dir, limit=32)
    assert result.num_images == 32 and result.checkpoint == str(path)
    assert result.test_set == "GTSRB Final_Test, 32 images (gtsrb50_test_lossless.npz)"
    out = result.write_json(tmp_path / "eval.json")
    assert EvalResult(**json.loads(out.read_text())) == result


def test_eval_forward_override_is_used_and_recorded(gtsrb_dir: Path, tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "model.pt", _model())
    default, _ = evaluate_checkpoint(path, data_dir=gtsrb_dir, limit=16)
    expected, arrays = evaluate_checkpoint(path, data_dir=gtsrb_dir, limit=16, eval_forward="expected")
    bilinear, bilinear_arrays = evaluate_checkpoint(
        path, data_dir=gtsrb_dir, limit=16, eval_forward="bilinear"
    )
    assert default.inference_forward == "bilinear"
    assert expected.inference_forward == "expected"
    assert bilinear.inference_forward == "bilinear"
    # The Gaussian-prefiltered forward samples other crops than exact bilinear, so the predicted warps differ.
    assert not np.array_equal(arrays.warps_perturbed, bilinear_arrays.warps_perturbed)
