"""Data folder resolution and class names."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.data import load_class_names, resolve_data_dir
from training.errors import DataError


def test_option_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GTSRB_DATA_DIR", "/does/not/exist")
    assert resolve_data_dir(tmp_path) == tmp_path.resolve()
    assert resolve_data_dir(str(tmp_path)) == tmp_path.resolve()


def test_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GTSRB_DATA_DIR", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path.resolve()
    monkeypatch.setenv("GTSRB_DATA_DIR", str(tmp_path / "missing"))
    with pytest.raises(DataError, match=r"missing: GTSRB data folder not found \(from \$GTSRB_DATA_DIR\)"):
        resolve_data_dir(None)


def test_missing_option(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing: GTSRB data folder not found"):
        resolve_data_dir(tmp_path / "missing")


def test_default_relative_to_current_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GTSRB_DATA_DIR", raising=False)
    data = tmp_path / "shared/data/gtsrb"
    data.mkdir(parents=True)
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    assert resolve_data_dir(None) == data.resolve()


def test_default_relative_to_repo(repo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GTSRB_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    expected = repo_root.parent / "shared/data/gtsrb"
    if expected.is_dir():
        assert resolve_data_dir(None) == expected.resolve()
    else:
        with pytest.raises(DataError, match="pass --data-dir or set"):
            resolve_data_dir(None)


def test_class_names(gtsrb_dir: Path) -> None:
    names = load_class_names(gtsrb_dir)
    assert len(names) == 43
    assert names[0] == "Speed limit (20km/h)"
    assert names[14] == "Stop"
    assert names[42] == "End of no passing by vehicles over 3.5 metric tons"


def test_class_names_errors(tmp_path: Path, gtsrb_dir: Path) -> None:
    with pytest.raises(DataError, match=r"classes\.csv: class-name file not found"):
        load_class_names(tmp_path)
    lines = (gtsrb_dir / "classes.csv").read_text().splitlines()
    (tmp_path / "classes.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataError, match="expected 43 classes, found 42"):
        load_class_names(tmp_path)
