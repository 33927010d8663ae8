"""Startup with missing, broken or misnamed bundles: the service starts, says why, and serves what it can."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.service.conftest import ClientFactory
from tests.service.helpers import encode, photo_like, registry_of, sample

PNG = {"content-type": "image/png"}


def test_empty_repository_is_not_ready(client_factory: ClientFactory, tmp_path: Path) -> None:
    client = client_factory(tmp_path / "no-models-here")
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 503 and ready.json() == {"ready": False}
    assert client.get("/v2/health/live").status_code == 200
    response = client.post("/v1/classify", content=encode(photo_like()), headers=PNG)
    assert response.status_code == 503 and response.json()["error"]["code"] == "not_ready"
    assert response.headers["retry-after"] == "1"
    assert client.get("/v1/models").json() == {"default": None, "models": []}


def test_a_broken_bundle_is_skipped_and_the_others_serve(
    client_factory: ClientFactory, writable_repo: Path, default_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.copytree(writable_repo / default_name, writable_repo / "broken")
    (writable_repo / "broken" / "model.json").write_text("{")
    client = client_factory(writable_repo)
    assert [m["name"] for m in client.get("/v1/models").json()["models"]] == [default_name]
    assert client.get("/v2/health/ready").status_code == 200
    assert client.post("/v1/classify", content=encode(photo_like()), headers=PNG).status_code == 200
    assert any("model broken not loaded" in r.getMessage() for r in caplog.records)
    assert (
        sample(registry_of(client), "stn_model_reloads_total", {"model": "broken", "result": "failure"}) == 1
    )


def test_default_setting_overrides_the_marker(client_factory: ClientFactory, tiny_repo: Path) -> None:
    client = client_factory(tiny_repo, default_model="tiny-stn-b")
    body = client.post("/v1/classify", content=encode(photo_like()), headers=PNG).json()
    assert body["model"] == "tiny-stn-b"
    models = {m["name"]: m["default"] for m in client.get("/v1/models").json()["models"]}
    assert models == {"tiny-stn": False, "tiny-stn-b": True}
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    flags = {s.labels["model"]: s.labels["default"] for s in families["stn_model_info"].samples}
    assert flags == {"tiny-stn": "false", "tiny-stn-b": "true"}


def test_default_marker_naming_a_missing_bundle(client_factory: ClientFactory, writable_repo: Path) -> None:
    (writable_repo / "DEFAULT").write_text("gone\n")
    client = client_factory(writable_repo)
    assert client.get("/v2/health/ready").status_code == 503
    response = client.post("/v1/classify", content=encode(photo_like()), headers=PNG)
    assert response.status_code == 503 and "'gone'" in response.json()["error"]["message"]


def test_name_must_match_the_folder(
    client_factory: ClientFactory, writable_repo: Path, default_name: str
) -> None:
    card_path = writable_repo / default_name / "model.json"
    card = json.loads(card_path.read_text())
    card["name"] = "renamed"
    card_path.write_text(json.dumps(card))
    client = client_factory(writable_repo)
    assert client.get("/v1/models").json()["models"] == []
