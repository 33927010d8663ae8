"""Fixtures of the fuzz tests: the model repository, the corpus, and an in-process service over them.

The repository is the e2e one (``e2e_repo``: ``<repo>/models`` when it has a DEFAULT, else the tiny test
bundles built once per session by tests/service/bundle_factory.py), so the real server process of
test_server.py serves the same models as the in-process app.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.app import create_app
from tests.e2e.conftest import e2e_repo
from tests.fuzz.corpus import Sample, build_corpus
from tests.service.conftest import make_settings
from tests.service.helpers import TestClient

__all__ = ["e2e_repo"]


@pytest.fixture(scope="session")
def corpus(gtsrb_dir: Path) -> list[Sample]:
    """The image corpus (tests/fuzz/corpus.py), built once per session."""
    return build_corpus(gtsrb_dir)


@pytest.fixture(scope="session")
def fuzz_default_model(e2e_repo: Path) -> str:
    return (e2e_repo / "DEFAULT").read_text(encoding="utf-8").strip()


@pytest.fixture(scope="module")
def fuzz_client(e2e_repo: Path) -> Iterator[TestClient]:
    """A started in-process service (test settings: API key ``test-key``, one inference thread)."""
    with TestClient(create_app(make_settings(e2e_repo))) as client:
        yield client
