"""The training loop on a tiny real subset, resume, and the typed config (TOML, overrides, validation)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from training.config import (
    DataConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    load_config_file,
)
from training.errors import CheckpointError, ConfigError, DataError
from training.models import ModelConfig, load_checkpoint
from training.train import train

REPO = Path(__file__).resolve().parents[2]


def _tiny(gtsrb_dir: Path, out: Path, **run: object) -> TrainConfig:
    return TrainConfig(
        model=ModelConfig(model_type="stn", arch="paper", sampler="bilinear", warp_type="affine"),
        data=DataConfig(
            data_dir=str(gtsrb_dir), limit_train=240, limit_test=64, val_fraction=0.2, cache_dir=None
        ),
        optim=OptimConfig(epochs=1, batch_size=32, lr=1e-3),
        run=replace(RunConfig(out=str(out), threads=1, log_every=2, plots=False), **run),  # type: ignore[arg-type]
    )


def test_tiny_run_writes_every_output_and_resumes(
    gtsrb_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    config = _tiny(gtsrb_dir, out, plots=True)
    result = train(config)
    steps = result.steps
    assert steps >= 4
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt", "model.pt", "eval.json"):
        assert (out / name).is_file(), name
    for name in ("training_curves.png", "class_crops.png", "confusion_matrix.png", "angle_vs_rotation.png"):
        assert (out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert config_from_dict(json.loads((out / "config.json").read_text())) == config
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["epoch"] == 1 and records[0]["step"] == steps
    assert 0.0 <= records[0]["val_error_clean"] <= 1.0 and records[0]["images"] == steps * 32
    assert records[-1]["test"] is True and records[-1]["num_images"] == 64
    evaluation = json.loads((out / "eval.json").read_text())
    assert evaluation["num_images"] == 64 and evaluation["inference_forward"] == "bilinear"
    assert result.eval is not None and evaluation["error_clean"] == result.eval.error_clean

    loaded = load_checkpoint(out / "model.pt")  # rebuilds without the training script
    assert loaded.model_config == config.model
    assert loaded.train_config == config.to_dict()
    assert loaded.payload["step"] == steps and loaded.payload["wall_time_s"] > 0
    err = capsys.readouterr().err
    assert "img/s" in err and "ETA" in err and "test error" in err

    # resume for a second epoch: the step count and the history continue
    resumed = replace(
        config,
        optim=replace(config.optim, epochs=2),
        run=replace(config.run, resume=str(out / "checkpoint.pt"), final_eval=False, plots=False),
    )
    result2 = train(resumed)
    assert result2.steps == 2 * steps
    assert [r["epoch"] for r in result2.history] == [1, 2]
    assert load_checkpoint(out / "model.pt").payload["step"] == 2 * steps


def test_max_steps_and_no_validation(gtsrb_dir: Path, tmp_path: Path) -> None:
    config = _tiny(gtsrb_dir, tmp_path / "run", max_steps=2, final_eval=False)
    config = replace(config, data=replace(config.data, val_fraction=0.0))
    result = train(config)
    assert result.steps == 2
    assert "val_error_clean" not in result.history[0]
    assert not (tmp_path / "run" / "eval.json").exists()


def test_resume_rejects_final_model_and_other_model(gtsrb_dir: Path, tmp_path: Path) -> None:
    config = _tiny(gtsrb_dir, tmp_path / "run", max_steps=1, final_eval=False)
    train(config)
    with pytest.raises(CheckpointError, match="not a resumable checkpoint"):
        train(replace(config, run=replace(config.run, resume=str(tmp_path / "run" / "model.pt"))))
    other = replace(
        config,
        model=replace(config.model, warp_type="homography"),
        run=replace(config.run, resume=str(tmp_path / "run" / "checkpoint.pt")),
    )
    with pytest.raises(CheckpointError, match="model config differs"):
        train(other)


def test_init_from_starts_at_the_checkpoints_weights_with_a_fresh_step(
    gtsrb_dir: Path, tmp_path: Path
) -> None:
    first = _tiny(gtsrb_dir, tmp_path / "first", max_steps=2, final_eval=False)
    train(first)
    start = tmp_path / "first" / "model.pt"
    trained = load_checkpoint(start).model.state_dict()
    # lr tiny, one step: the fine-tuned weights stay next to the checkpoint's, far from a fresh init
    tune = replace(
        first,
        model=replace(first.model, sampler="linearized", eval_forward="expected"),  # no weights: allowed
        optim=replace(first.optim, lr=1e-9, warmup_epochs=0.0),
        run=replace(first.run, out=str(tmp_path / "tuned"), max_steps=1, init_from=str(start)),
    )
    result = train(tune)
    assert result.steps == 1  # the step count starts fresh
    lineage = torch.load(tmp_path / "tuned" / "model.pt", weights_only=True)["fine_tuned_from"]
    assert lineage["sha256"] == hashlib.sha256(start.read_bytes()).hexdigest()
    assert lineage["epochs"] == 1 and lineage["path"] == str(start) and lineage["fine_tuned_from"] is None
    assert lineage["train_config"]["model"]["sampler"] == "bilinear"
    tuned = load_checkpoint(tmp_path / "tuned" / "model.pt").model.state_dict()
    weights = [k for k in trained if trained[k].is_floating_point() and "running" not in k]
    assert all(torch.allclose(tuned[k], trained[k], atol=1e-5) for k in weights)
    fresh = train(replace(tune, run=replace(tune.run, out=str(tmp_path / "fresh"), init_from=None)))
    assert fresh.model is not None
    assert any(not torch.allclose(fresh.model.state_dict()[k], trained[k], atol=1e-3) for k in weights)


def test_init_from_rejects_another_architecture_and_resume(gtsrb_dir: Path, tmp_path: Path) -> None:
    config = _tiny(gtsrb_dir, tmp_path / "run", max_steps=1, final_eval=False)
    train(config)
    start = str(tmp_path / "run" / "model.pt")
    other = replace(
        config,
        model=replace(config.model, warp_type="homography"),
        run=replace(config.run, out=str(tmp_path / "other"), init_from=start),
    )
    with pytest.raises(CheckpointError, match=r"another architecture.*warp_type 'affine' vs 'homography'"):
        train(other)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        train(replace(config, run=replace(config.run, init_from=str(tmp_path / "missing.pt"))))
    with pytest.raises(ConfigError, match="exclude each other"):
        replace(config.run, init_from=start, resume=start)


def test_ema_and_augmentation_run_resume_and_save_the_average(gtsrb_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = _tiny(gtsrb_dir, out, max_steps=3, final_eval=False)
    config = replace(
        config,
        data=replace(
            config.data,
            val_fraction=0.0,
            color_jitter=0.1,
            blur_prob=0.5,
            noise_std=2.0,
            exposure_jitter=0.3,
            saturation_jitter=0.3,
            shadow_prob=0.5,
        ),
        optim=replace(config.optim, ema_decay=0.5, epochs=2),
    )
    result = train(config)
    assert result.model is not None
    raw = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    saved = load_checkpoint(out / "model.pt").model.state_dict()
    ema_params = {
        k.removeprefix("module."): v for k, v in raw["ema_state"].items() if k.startswith("module.")
    }
    # model.pt holds the moving average, not the last step's raw weights
    assert all(torch.equal(saved[k], ema_params[k]) for k in saved)
    assert any(
        not torch.equal(saved[k], raw["model_state"][k]) for k in saved if saved[k].is_floating_point()
    )
    resumed = replace(config, run=replace(config.run, resume=str(out / "checkpoint.pt"), max_steps=6))
    assert train(resumed).steps == 6
    without_ema = replace(resumed, optim=replace(config.optim, ema_decay=None))
    train(without_ema)  # a checkpoint with an average resumes without one (the average is dropped)
    no_ema_out = tmp_path / "plain"
    plain = replace(
        config, optim=replace(config.optim, ema_decay=None), run=replace(config.run, out=str(no_ema_out))
    )
    train(plain)
    with pytest.raises(CheckpointError, match=r"without optim\.ema_decay"):
        train(replace(config, run=replace(config.run, resume=str(no_ema_out / "checkpoint.pt"))))


def test_missing_data_dir_is_a_data_error(tmp_path: Path) -> None:
    config = _tiny(tmp_path / "nowhere", tmp_path / "run")
    with pytest.raises(DataError, match="nowhere"):
        train(config)


def test_shipped_configs_parse() -> None:
    for path in sorted((REPO / "training" / "configs").glob("*.toml")):
        if path.name.startswith("grid-"):
            continue
        config = load_config_file(path)
        assert config.model.model_type in ("cnn", "stn", "icstn", "stn-c", "stn-sl"), path


def test_toml_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[model]\nmodel_type = "icstn"\nwarp_n = 2\n[optim]\nlr = 0.01\n')
    config = load_config_file(path)
    assert config.model.model_type == "icstn" and config.model.warp_n == 2 and config.optim.lr == 0.01
    config = apply_overrides(
        config, ["optim.lr=0.5", "run.out=elsewhere", "data.limit_train=none", "run.amp=false"]
    )
    assert config.optim.lr == 0.5 and config.run.out == "elsewhere"
    assert config.data.limit_train is None and config.run.amp is False
    assert config_from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.nope=1", "unknown config key optim.nope"),
        ("nope.lr=1", "unknown config section 'nope'"),
        ("optim.lr", "expected section.key=value"),
        ("lr=1", "expected section.key"),
        ("optim.epochs=many", "optim.epochs = 'many': expected an integer"),
        ("optim.epochs=1.5", "expected an integer"),
        ("run.amp=maybe", "expected true or false"),
        ("optim.lr=-1", "optim.lr = -1.0: expected > 0"),
        ("optim.ema_decay=1", "optim.ema_decay = 1.0: expected 0 < value < 1"),
        ("data.blur_prob=2", "data.blur_prob = 2.0"),
        ("data.blur_max_sigma=3", "data.blur_max_sigma = 3.0"),
        ("data.noise_std=-1", "data.noise_std = -1.0: expected a value >= 0"),
        ("data.exposure_jitter=-0.1", "data.exposure_jitter = -0.1: expected a value >= 0"),
        ("data.shadow_prob=1.5", "data.shadow_prob = 1.5: expected 0 <= value <= 1"),
        ("data.shadow_min_gain=0", "data.shadow_min_gain = 0.0: expected 0 < value <= 0.9"),
        ('model.model_type="vit"', "model.model_type = 'vit'"),
        ('optim.optimizer="lbfgs"', "optim.optimizer"),
        ("data.val_fraction=1.0", "data.val_fraction"),
    ],
)
def test_bad_overrides_raise_config_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        apply_overrides(TrainConfig(), [override])


def test_bad_config_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config_file(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config_file(bad)
    flat = tmp_path / "flat.toml"
    flat.write_text("lr = 1\n")
    with pytest.raises(ConfigError, match="must be a table"):
        load_config_file(flat)


def test_device_auto_is_cpu_without_cuda() -> None:
    from training.train import resolve_device

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ConfigError, match="no CUDA"):
        resolve_device("cuda")


def test_persistent_non_finite_loss_stops_with_a_training_error(
    gtsrb_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.train as train_module
    from training.errors import TrainingError
    from training.models import build_model

    def broken(cfg: ModelConfig):  # type: ignore[no-untyped-def]
        model = build_model(cfg)
        with torch.no_grad():
            next(iter(model.parameters())).fill_(float("nan"))
        return model

    monkeypatch.setattr(train_module, "build_model", broken)
    config = _tiny(gtsrb_dir, tmp_path / "run", final_eval=False)
    config = replace(config, optim=replace(config.optim, batch_size=16))
    with pytest.raises(TrainingError, match="loss is not finite at step 1 \\(10 bad batches"):
        train(config)
