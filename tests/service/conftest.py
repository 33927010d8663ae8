"""Fixtures of the service tests: a model repository of REAL bundles and settings/clients over it.

``model_repo`` is the repository's own ``models/`` when ``models/DEFAULT`` exists (trained bundles), else a
repository of two tiny torch-exported bundles built once per session (tests/service/bundle_factory.py).
Tests that change bundles copy them into their own ``tmp_path`` first.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from service.app import create_app
from service.settings import Settings
from tests.service import bundle_factory
from tests.service.helpers import TestClient


def build_or_reuse_tiny_repo(base: Path, gtsrb_dir: Path) -> Path:
    """The tiny repository under the session's base temp folder, built once (shared by tests/e2e)."""
    root = base / "tiny-models"
    if not (root / "DEFAULT").is_file():
        bundle_factory.build_repository(root, bundle_factory.read_classes(gtsrb_dir))
    return root


@pytest.fixture(scope="session")
def classes(gtsrb_dir: Path) -> list[dict[str, Any]]:
    return bundle_factory.read_classes(gtsrb_dir)


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory, gtsrb_dir: Path) -> Path:
    """Always the synthetic repository (tiny-stn, DEFAULT, and tiny-stn-b)."""
    return build_or_reuse_tiny_repo(tmp_path_factory.getbasetemp(), gtsrb_dir)


@pytest.fixture(scope="session")
def model_repo(repo_root: Path, tiny_repo: Path) -> Path:
    """The repository under test: <repo>/models when it has a DEFAULT, else the tiny one."""
    real = repo_root / "models"
    return real if (real / "DEFAULT").is_file() else tiny_repo


@pytest.fixture(scope="session")
def default_name(model_repo: Path) -> str:
    return (model_repo / "DEFAULT").read_text(encoding="utf-8").strip()


@pytest.fixture
def writable_repo(tmp_path: Path, model_repo: Path, default_name: str) -> Path:
    """A copy of the default bundle (and DEFAULT) that a test may modify."""
    root = tmp_path / "models"
    root.mkdir()
    shutil.copytree(model_repo / default_name, root / default_name)
    (root / "DEFAULT").write_text(default_name + "\n", encoding="utf-8")
    return root


def make_settings(models_dir: Path, **overrides: Any) -> Settings:
    """Test settings: small thread counts, a short batch delay, an API key; overrides win."""
    values: dict[str, Any] = {
        "models_dir": models_dir,
        "api_key": "test-key",
        "max_delay_ms": 1.0,
        "intra_op_threads": 1,
        "inference_workers": 1,
        "decode_workers": 1,
        "log_format": "text",
        "request_timeout_s": 20.0,
    }
    values.update(overrides)
    return Settings(**values)


ClientFactory = Callable[..., TestClient]


@pytest.fixture
def client_factory() -> Iterator[ClientFactory]:
    """``client_factory(models_dir, **settings)``: started TestClients, closed (lifespan end) at teardown."""
    clients: list[TestClient] = []

    def make(models_dir: Path, **overrides: Any) -> TestClient:
        client = TestClient(create_app(make_settings(models_dir, **overrides)))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def client(model_repo: Path) -> Iterator[TestClient]:
    """A client over ``model_repo`` shared by a module's read-only tests (metric checks use deltas)."""
    with TestClient(create_app(make_settings(model_repo))) as shared:
        yield shared
