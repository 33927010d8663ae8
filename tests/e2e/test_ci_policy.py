"""A missing system package (chromium, prometheus) skips an e2e test locally but fails it under CI=true."""

from __future__ import annotations

import pytest

from tests.service.helpers import missing_system_package


@pytest.mark.parametrize("value", ["true", "True", "1"])
def test_ci_fails_instead_of_skipping(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match=r"chromium is not installed.*CI=true requires it"):
        missing_system_package("chromium is not installed")


@pytest.mark.parametrize("value", [None, "", "false"])
def test_elsewhere_it_skips(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.skip.Exception, match="prometheus"):
        missing_system_package("the prometheus binary is not installed")
