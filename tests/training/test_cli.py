"""CLI: exit codes and one-line messages on bad input; the subcommands end to end on tiny real data."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from training import cli
from training.models import ModelConfig, build_model, save_checkpoint

REPO = Path(__file__).resolve().parents[2]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--data-dir", "/nonexistent/gtsrb", "--out", "{tmp}/o"], "/nonexistent/gtsrb"),
        (["train", "--set", "optim.nope=1"], "unknown config key optim.nope"),
        (["train", "--set", "optim.lr=fast"], "optim.lr = 'fast': expected a number"),
        (["train", "--model", "vit"], "model.model_type = 'vit'"),
        (["train", "--config", "{tmp}/missing.toml"], "config file not found"),
        (["evaluate", "--checkpoint", "{tmp}/missing.pt"], "checkpoint not found"),
        (["evaluate", "--checkpoint", "{tmp}/corrupt.pt"], "corrupt or not a torch checkpoint"),
        (
            ["export", "--checkpoint", "{tmp}/corrupt.pt", "--out", "{tmp}/b"],
            "corrupt or not a torch checkpoint",
        ),
        (["reproduce", "no-such-grid"], "unknown grid 'no-such-grid'"),
        (["plots", "--checkpoint", "{tmp}/missing.pt", "--out", "{tmp}/p"], "checkpoint not found"),
        (
            ["train", "--limit-train", "64", "--init-from", "{tmp}/corrupt.pt", "--out", "{tmp}/o"],
            "corrupt or not a torch checkpoint",
        ),
        (
            ["train", "--init-from", "{tmp}/corrupt.pt", "--resume", "{tmp}/corrupt.pt"],
            "run.resume and run.init_from exclude each other",
        ),
    ],
)
def test_user_errors_exit_2_with_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "corrupt.pt").write_bytes(b"\x00garbage")
    code, _out, err = _run([a.replace("{tmp}", str(tmp_path)) for a in argv], capsys)
    assert code == 2
    assert message in _one_error_line(err)


def test_missing_data_dir_for_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = save_checkpoint(tmp_path / "m.pt", build_model(ModelConfig(arch="paper")))
    code, _out, err = _run(["evaluate", "--checkpoint", str(ckpt), "--data-dir", str(tmp_path / "x")], capsys)
    assert code == 2 and str(tmp_path / "x") in _one_error_line(err)


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--epochs", "many"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        cli.main(["fly"])
    assert exc.value.code == 2


def test_unexpected_errors_exit_1_without_traceback_unless_debug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(args: object) -> int:
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setitem(cli._COMMANDS, "evaluate", boom)
    code, _out, err = _run(["evaluate", "--checkpoint", "x"], capsys)
    assert code == 1
    assert "unexpected RuntimeError: disk on fire second line" in _one_error_line(err)
    code, _out, err = _run(["--debug", "evaluate", "--checkpoint", "x"], capsys)
    assert code == 1 and "Traceback" in err


def test_print_config_resolves_file_sets_and_flags(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = _run(
        [
            "train",
            "--config",
            str(REPO / "training/configs/icstn-large.toml"),
            "--set",
            "optim.lr=0.01",
            "--epochs",
            "3",
            "--rate",
            "2",
            "--sampler",
            "bilinear",
            "--limit-train",
            "100",
            "--print-config",
        ],
        capsys,
    )
    assert code == 0
    config = json.loads(out)
    assert config["model"]["model_type"] == "icstn" and config["model"]["downsampling_rate"] == 2
    assert config["model"]["sampler"] == "bilinear" and config["optim"]["lr"] == 0.01
    assert config["optim"]["epochs"] == 3 and config["data"]["limit_train"] == 100


def test_train_evaluate_export_end_to_end(
    gtsrb_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code, stdout, _ = _run(
        [
            "train",
            "--config",
            str(REPO / "training/configs/paper.toml"),
            "--model",
            "stn",
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--limit-train",
            "96",
            "--limit-test",
            "40",
            "--max-steps",
            "2",
            "--data-dir",
            str(gtsrb_dir),
            "--out",
            str(out),
            "--threads",
            "1",
            "--no-plots",
            "--set",
            "data.cache_dir=none",
            "--set",
            "data.val_fraction=0",
        ],
        capsys,
    )
    assert code == 0 and "model:" in stdout
    assert not (out / "plots").exists()
    # a run trained with --no-plots draws them afterwards from its checkpoint
    code, stdout, _ = _run(
        ["plots", "--checkpoint", str(out / "model.pt"), "--out", str(out / "plots"), "--limit", "40"],
        capsys,
    )
    assert code == 0
    for name in ("training_curves.png", "class_crops.png", "confusion_matrix.png", "angle_vs_rotation.png"):
        assert (out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"wrote {out / 'plots' / name}" in stdout
    code, stdout, _ = _run(
        [
            "evaluate",
            "--checkpoint",
            str(out / "model.pt"),
            "--data-dir",
            str(gtsrb_dir),
            "--limit",
            "40",
            "--json",
            str(tmp_path / "e.json"),
        ],
        capsys,
    )
    assert code == 0 and "clean error" in stdout and "perturbed error" in stdout
    assert "inference forward: bilinear" in stdout and "Speed limit" in stdout
    # evaluate prints the same figures training stored
    assert (
        json.loads((tmp_path / "e.json").read_text())["error_clean"]
        == json.loads((out / "eval.json").read_text())["error_clean"]
    )
    bundle = tmp_path / "models" / "tiny"
    code, stdout, _ = _run(
        [
            "export",
            "--checkpoint",
            str(out / "model.pt"),
            "--out",
            str(bundle),
            "--metrics",
            str(tmp_path / "e.json"),
            "--data-dir",
            str(gtsrb_dir),
            "--default",
        ],
        capsys,
    )
    assert code == 0 and (bundle / "model.onnx").is_file()
    assert (tmp_path / "models" / "DEFAULT").read_text() == "tiny\n"
    assert json.loads((bundle / "model.json").read_text())["metrics"]["num_images"] == 40


def test_reproduce_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["reproduce", "samplers", "--dry-run", "--out", "runs/x"], capsys)
    assert code == 0
    assert "24 runs" in out and "linearized-icstn-r8:" in out


def test_module_entry_point_exit_code(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "training", "evaluate", "--checkpoint", str(tmp_path / "none.pt")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: checkpoint not found: {tmp_path / 'none.pt'}"


def test_reproduce_runs_a_grid_and_resumes(
    gtsrb_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = tmp_path / "grid-tiny.toml"
    grid.write_text(
        f'base = "{REPO / "training/configs/paper.toml"}"\n'
        '[axes]\n"model.model_type" = ["cnn", "stn"]\n'
        "[set]\n"
        f'"data.data_dir" = "{gtsrb_dir}"\n"data.limit_train" = 64\n"data.limit_test" = 16\n'
        '"data.val_fraction" = 0.0\n"data.cache_dir" = "none"\n"optim.batch_size" = 32\n"run.max_steps" = 1\n'
        '"run.plots" = false\n"model.sampler" = "bilinear"\n'
    )
    out = tmp_path / "rep"
    code, stdout, _ = _run(["reproduce", str(grid), "--out", str(out), "--jobs", "2"], capsys)
    assert code == 0, stdout
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["name"] for r in results) == ["cnn", "stn"]
    for r in results:
        assert r["returncode"] == 0 and r["eval"]["num_images"] == 16
        assert (out / r["name"] / "result.json").is_file() and (out / r["name"] / "model.pt").is_file()
    code, stdout, _ = _run(["reproduce", str(grid), "--out", str(out)], capsys)
    assert code == 0 and "started" not in stdout  # both runs already succeeded


def test_help_is_written_for_users(capsys: pytest.CaptureFixture[str]) -> None:
    texts = []
    for argv in ([], ["train"], ["evaluate"], ["export"], ["plots"], ["reproduce"], ["align"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main([*argv, "--help"])
        assert exit_info.value.code == 0
        texts.append(capsys.readouterr().out)
    text = "\n".join(texts)
    assert "__" not in text  # no internal dests such as MODEL__MODEL_TYPE as metavars
    assert re.search(r"issue \d", text) is None
    assert "--limit-train N" in text and "--init-from CHECKPOINT" in text


@pytest.mark.parametrize("argv", [["train", "--max-steps", "1"], ["evaluate", "--checkpoint", "m.pt"]])
def test_without_the_training_extra_the_cli_names_it(argv: list[str]) -> None:
    # a service-only install: torch, onnx and matplotlib cannot be imported
    code = (
        "import sys\n"
        "for name in ('torch', 'onnx', 'matplotlib'): sys.modules[name] = None\n"
        "from training.cli import main\n"
        f"sys.exit(main({argv!r}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (
        f"error: `python -m training {argv[0]}` needs the training extra (torch is not installed): "
        "pip install -e '.[training]'"
    )
