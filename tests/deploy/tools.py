"""External programs the deploy tests run: next to the interpreter (the venv's hadolint), on PATH, or in
/usr/sbin (Debian's haproxy, off a non-root user's PATH)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest


def in_ci() -> bool:
    """True under CI (``CI=true``, as CI services set it): a missing tool is then a failure, not a skip."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def find_tool(name: str) -> str | None:
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None and os.access(f"/usr/sbin/{name}", os.X_OK):
        found = f"/usr/sbin/{name}"
    return found


def require_tool(name: str, package: str) -> str:
    """The tool's path; skip when it is missing, but fail under CI, where .ci/run installs it."""
    path = find_tool(name)
    if path is None:
        message = f"{name} is not installed ({package}; .ci/run installs it)"
        if in_ci():
            pytest.fail(message + " and CI=true", pytrace=False)
        pytest.skip(message)
    return path
