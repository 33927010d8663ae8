"""Settings from the environment, the command line, and the service's import footprint (no torch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
from pydantic import ValidationError

from service.__main__ import main, parse_args
from service.settings import Settings, default_models_dir, get_settings, usable_cpus


def test_environment_variables_use_the_service_prefix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SERVICE_MAX_BATCH_SIZE", "7")
    monkeypatch.setenv("SERVICE_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("SERVICE_API_KEY", "s3cret")
    monkeypatch.setenv("SERVICE_EXECUTION_PROVIDER", "cpu")
    settings = Settings()
    assert settings.max_batch_size == 7 and settings.models_dir == tmp_path
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_get_settings_is_cached_and_built_on_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    get_settings.cache_clear()
    monkeypatch.setenv("SERVICE_QUEUE_SIZE", "3")
    try:
        assert get_settings() is get_settings() and get_settings().queue_size == 3
    finally:
        get_settings.cache_clear()


def test_defaults(repo_root: Path) -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert default_models_dir() == repo_root / "models"
    assert settings.host == "127.0.0.1" and settings.port == 8000
    assert settings.api_key is None  # admin API off unless configured
    assert settings.resolved_intra_op_threads() >= 1
    assert Settings(intra_op_threads=3).resolved_intra_op_threads() == 3


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("metrics_prefix", "9bad"),
        ("metrics_prefix", "a-b"),
        ("max_batch_size", 0),
        ("execution_provider", "tpu"),
    ],
)
def test_invalid_settings_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        Settings(**cast(dict[str, Any], {field: value}))


def test_command_line_options(tmp_path: Path) -> None:
    args = parse_args(["--host", "0.0.0.0", "--port", "9001", "--models-dir", str(tmp_path)])
    assert (args.host, args.port, args.models_dir) == ("0.0.0.0", 9001, tmp_path)
    assert parse_args([]).port is None  # unset options leave the environment's settings alone


def test_main_reports_invalid_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SERVICE_MAX_DELAY_MS", "-5")
    assert main([]) == 2
    assert "max_delay_ms" in capsys.readouterr().err


def test_main_names_the_extra_when_granian_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "granian", None)  # as if not installed: importing it fails
    assert main(["--server", "granian"]) == 2
    err = capsys.readouterr().err
    assert "stn-signs[granian]" in err and "Traceback" not in err
    assert parse_args(["--server", "uvicorn"]).server == "uvicorn"


def test_service_imports_neither_torch_nor_training(repo_root: Path) -> None:
    code = (
        "import json, sys; import service.app, service.__main__; from service.settings import Settings; "
        "service.app.create_app(Settings()); "
        "heavy = ('torch', 'training', 'onnx'); "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_importing_service_package_is_light(repo_root: Path) -> None:
    code = (
        "import sys, service; print(sorted(m for m in ('fastapi', 'onnxruntime', 'PIL') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_every_setting_is_documented(repo_root: Path) -> None:
    text = (repo_root / "docs" / "service.md").read_text(encoding="utf-8")
    table = {line.split("`")[1] for line in text.splitlines() if line.startswith("| `SERVICE_")}
    assert table == {f"SERVICE_{name.upper()}" for name in Settings.model_fields}


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this OS")
def test_default_threads_follow_the_cpu_affinity() -> None:
    """Pinned to one core (taskset, a cpuset), the default is one intra-op thread, not the machine's count."""
    original = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(original)})
        assert usable_cpus() == 1
        assert Settings(_env_file=None).resolved_intra_op_threads() == 1  # type: ignore[call-arg]
    finally:
        os.sched_setaffinity(0, original)
    assert usable_cpus() == len(original)
