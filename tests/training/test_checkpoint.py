"""Checkpoints rebuild their model without the training script, and bad files fail with CheckpointError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from training.data import load_gtsrb
from training.errors import CheckpointError
from training.models import ModelConfig, build_model, load_checkpoint, save_checkpoint
from training.models.common import TransformerClassifier


def _warp_head(model: TransformerClassifier) -> nn.Linear:
    head = model.warp_head()
    assert head is not None
    return head


@pytest.fixture(scope="module")
def images(gtsrb_dir: Path) -> torch.Tensor:
    split = load_gtsrb(gtsrb_dir, "test", limit=8)
    return torch.from_numpy(np.ascontiguousarray(split.images)).permute(0, 3, 1, 2).float()


@pytest.mark.parametrize("model_type", ["stn", "icstn"])
def test_round_trip_gives_identical_outputs(model_type: str, images: torch.Tensor, tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(model_type=model_type, arch="large", warp_type="affine", warp_n=2)
    model = build_model(cfg)
    with torch.no_grad():  # make the transformer non-trivial and the BN statistics non-default
        _warp_head(model).weight.normal_(0, 1e-3)
        model.train()(images)
    model.eval()
    path = save_checkpoint(tmp_path / "model.pt", model, train_config={"note": "x"}, extra={"epoch": 3})
    loaded = load_checkpoint(path)
    assert loaded.model_config == cfg
    assert loaded.train_config == {"note": "x"}
    assert loaded.payload["epoch"] == 3
    assert not loaded.model.training
    with torch.no_grad():
        a, b = model(images), loaded.model(images)
    assert torch.equal(a.logits, b.logits)
    assert torch.equal(a.warp, b.warp)
    assert not torch.allclose(a.warp, torch.eye(3).expand_as(a.warp))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


def test_truncated_file(tmp_path: Path) -> None:
    model = build_model(ModelConfig(arch="paper"))
    path = save_checkpoint(tmp_path / "model.pt", model)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


def test_foreign_torch_file(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not a stn-signs-checkpoint"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_config(tmp_path: Path) -> None:
    model = build_model(ModelConfig(arch="paper"))
    path = save_checkpoint(tmp_path / "model.pt", model)
    payload = torch.load(path, weights_only=True)
    payload["model_config"]["arch"] = "large"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="cannot rebuild the model"):
        load_checkpoint(path)


def test_unknown_model_config_key(tmp_path: Path) -> None:
    model = build_model(ModelConfig(arch="paper"))
    path = save_checkpoint(tmp_path / "model.pt", model)
    payload = torch.load(path, weights_only=True)
    payload["model_config"]["depth"] = 3
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="unknown model config key"):
        load_checkpoint(path)
