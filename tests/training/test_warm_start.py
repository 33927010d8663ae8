"""Warm-starting an IC-STN from a trained STN (``run.init_from``): the same parameters, lineage recorded."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from training.config import DataConfig, OptimConfig, RunConfig, TrainConfig
from training.errors import CheckpointError
from training.models import ModelConfig, build_model, load_checkpoint, save_checkpoint
from training.state import init_weights


def _config(model_type: str, out: Path, init_from: str | None = None, arch: str = "paper") -> TrainConfig:
    return TrainConfig(
        model=ModelConfig(model_type=model_type, arch=arch, sampler="bilinear", warp_type="affine", warp_n=2),
        data=DataConfig(val_fraction=0.0, cache_dir=None),
        optim=OptimConfig(epochs=1),
        run=RunConfig(out=str(out), threads=1, plots=False, final_eval=False, init_from=init_from),
    )


def test_an_icstn_starts_from_a_trained_stn(tmp_path: Path) -> None:
    torch.manual_seed(0)
    stn_config = _config("stn", tmp_path)
    stn = build_model(stn_config.model)
    with torch.no_grad():
        for p in stn.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    path = save_checkpoint(tmp_path / "stn.pt", stn, train_config=stn_config.to_dict(), extra={"epoch": 3})
    icstn_config = _config("icstn", tmp_path, init_from=str(path))
    icstn = build_model(icstn_config.model)
    lineage = init_weights(icstn, str(path), icstn_config)
    assert lineage["epochs"] == 3 and lineage["path"] == str(path)
    mine, theirs = icstn.state_dict(), load_checkpoint(path).model.state_dict()
    assert mine.keys() == theirs.keys()
    for key, value in theirs.items():
        torch.testing.assert_close(mine[key], value)
    # With warp_n = 2 the IC-STN applies the same predictor twice, so its warp differs from the STN's.
    x = torch.rand(2, 3, 50, 50) * 255
    icstn.eval()
    stn.eval()
    assert not torch.allclose(icstn(x).warp, stn(x).warp)


def test_other_architectures_still_refuse(tmp_path: Path) -> None:
    stn_config = _config("stn", tmp_path)
    path = save_checkpoint(
        tmp_path / "stn.pt", build_model(stn_config.model), train_config=stn_config.to_dict()
    )
    cnn_config = _config("cnn", tmp_path, init_from=str(path))
    with pytest.raises(CheckpointError, match="model_type 'stn' vs 'cnn'"):
        init_weights(build_model(cnn_config.model), str(path), cnn_config)
    other = replace(
        _config("icstn", tmp_path, init_from=str(path)),
        model=replace(cnn_config.model, model_type="icstn", warp_type="homography"),
    )
    with pytest.raises(CheckpointError, match="warp_type"):
        init_weights(build_model(other.model), str(path), other)


def test_loc_context_widens_what_the_localisation_network_sees(tmp_path: Path) -> None:
    from training import geometry
    from training.errors import ConfigError

    wide = ModelConfig(
        model_type="stn", arch="paper", sampler="bilinear", warp_type="affine", loc_context=1.25
    )
    model = build_model(wide).eval()
    assert model.loc_sampler is not None and model.loc_sampler.extent == 1.25
    # The localisation input is the crop of a 1.25x larger region: the same as sampling the frame through the
    # identity scaled by 1.25 about the centre.
    x = torch.rand(2, 3, 50, 50) * 255
    eye = torch.eye(3).expand(2, 3, 3)
    scaled = torch.diag(torch.tensor([1.25, 1.25, 1.0])).expand(2, 3, 3)
    torch.testing.assert_close(
        model.sample_for_localisation(x, eye),
        geometry.warp_images(x, scaled, wide.loc_size),
        atol=5e-3,  # 0..255 pixels; float32 grids built two ways
        rtol=0,
    )
    # Same parameters as the plain STN: a fine-tuning run may change the context.
    plain_config = _config("stn", tmp_path)
    path = save_checkpoint(
        tmp_path / "p.pt", build_model(plain_config.model), train_config=plain_config.to_dict()
    )
    wide_config = replace(plain_config, model=replace(plain_config.model, loc_context=1.3))
    init_weights(build_model(wide_config.model), str(path), wide_config)
    with pytest.raises(ConfigError, match="loc_context"):
        ModelConfig(model_type="cnn", loc_context=1.3)
    with pytest.raises(ConfigError, match="loc_context"):
        ModelConfig(loc_context=0.5)
