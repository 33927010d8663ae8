"""The modules that say "no torch" really import no torch (each in a fresh interpreter), and the packages'
lazy ``__init__`` files still give every public name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TORCH_FREE = (
    "training",
    "training.conventions",
    "training.config",
    "training.models.config",
    "training.sampling.modes",
    "training.errors",
    "training.cli",
    "service.contract",
)


@pytest.mark.parametrize("module", TORCH_FREE)
def test_module_imports_no_torch(module: str, repo_root: Path) -> None:
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False", f"importing {module} imported torch"


@pytest.mark.parametrize("package", ["training.models", "training.sampling", "training.data"])
def test_lazy_packages_give_every_public_name(package: str) -> None:
    import importlib

    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
        assert name in dir(module)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        module.nope  # noqa: B018
