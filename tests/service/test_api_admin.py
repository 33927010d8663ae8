"""POST /v1/models/{name}/reload: API key, atomic swap with in-flight requests, broken bundles refused."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from service.bundles import sha256_file
from tests.service.bundle_factory import break_bundle, set_version
from tests.service.conftest import ClientFactory
from tests.service.gate import Background, install_gate, wait_until
from tests.service.helpers import TestClient, app_state, encode, photo_like, registry_of, sample

PNG = {"content-type": "image/png"}
KEY = {"X-API-Key": "test-key"}


@pytest.fixture(scope="module")
def png() -> bytes:
    return encode(photo_like(60, 60, seed=5))


def registry(client: TestClient) -> Any:
    return registry_of(client)


def served_version(client: TestClient, png: bytes) -> str:
    response = client.post("/v1/classify", content=png, headers=PNG)
    assert response.status_code == 200, response.text
    return str(response.json()["results"][0]["version"])


def test_reload_needs_the_api_key(
    client_factory: ClientFactory, writable_repo: Path, default_name: str
) -> None:
    client = client_factory(writable_repo)
    url = f"/v1/models/{default_name}/reload"
    missing = client.post(url)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = client.post(url, headers={"X-API-Key": "nope"})
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "forbidden"
    assert client.post(url, headers={"Authorization": "Bearer nope"}).status_code == 403
    assert client.post(url, headers={"Authorization": "Bearer test-key"}).status_code == 200
    assert sample(registry(client), "stn_rejections_total", {"reason": "unauthorized"}) == 1
    assert sample(registry(client), "stn_rejections_total", {"reason": "forbidden"}) == 2


def test_admin_api_disabled_without_a_key(
    client_factory: ClientFactory, writable_repo: Path, default_name: str
) -> None:
    client = client_factory(writable_repo, api_key=None)
    response = client.post(f"/v1/models/{default_name}/reload", headers=KEY)
    assert response.status_code == 403 and "SERVICE_API_KEY" in response.json()["error"]["message"]


def test_reload_swaps_in_the_new_version(
    client_factory: ClientFactory, writable_repo: Path, default_name: str, png: bytes
) -> None:
    client = client_factory(writable_repo)
    old = client.get(f"/v1/models/{default_name}").json()["version"]
    set_version(writable_repo / default_name, "9.9.9-reloaded")
    assert served_version(client, png) == old  # nothing changes before the reload
    response = client.post(f"/v1/models/{default_name}/reload", headers=KEY)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        "model": default_name,
        "status": "reloaded",
        "version": "9.9.9-reloaded",
        "previous_version": old,
        "sha256": sha256_file(writable_repo / default_name / "model.onnx"),
        "load_seconds": body["load_seconds"],
    }
    assert served_version(client, png) == "9.9.9-reloaded"
    assert client.get(f"/v1/models/{default_name}").json()["version"] == "9.9.9-reloaded"
    reg = registry(client)
    assert (
        sample(reg, "stn_model_reloads_total", {"model": default_name, "result": "success"}) == 2
    )  # start + reload
    new_info = {"model": default_name, "version": "9.9.9-reloaded"}
    assert sample(reg, "stn_model_load_duration_seconds", new_info) > 0
    wait_until(
        lambda: (
            reg.get_sample_value("stn_model_load_duration_seconds", {"model": default_name, "version": old})
            is None
        )
    )
    text = client.get("/metrics").text
    assert f'version="{old}"' not in text.split("stn_model_info", 1)[1].split("# HELP", 1)[0]


def test_in_flight_requests_finish_on_the_old_version(
    client_factory: ClientFactory, writable_repo: Path, default_name: str, png: bytes
) -> None:
    # two executor threads: the old batch holds one while the new version runs on the other
    client = client_factory(writable_repo, inference_workers=2)
    old = client.get(f"/v1/models/{default_name}").json()["version"]
    gate = install_gate(client, default_name)
    in_flight = Background(client, "/v1/classify", content=png, headers=PNG)
    try:
        assert gate.entered.wait(10)  # the request is inside the old model's onnxruntime call
        set_version(writable_repo / default_name, "2.0.0-new")
        reload = client.post(f"/v1/models/{default_name}/reload", headers=KEY)
        assert reload.status_code == 200 and reload.json()["previous_version"] == old
        assert served_version(client, png) == "2.0.0-new"  # new requests do not wait for the old batch
    finally:
        gate.release.set()
    response = in_flight.result()
    assert response.status_code == 200
    assert response.json()["results"][0]["version"] == old


@pytest.mark.parametrize(
    ("how", "fragment"),
    [
        ("bad_json", "not valid JSON"),
        ("missing_onnx", "model.onnx: missing"),
        ("corrupt_onnx", "onnxruntime cannot load it"),
        ("sha256_mismatch", "does not match model.json onnx.sha256"),
        ("wrong_output_shapes", "output 'logits' has shape (2, 10)"),
    ],
)
def test_broken_bundle_is_refused_and_the_old_keeps_serving(
    client_factory: ClientFactory,
    writable_repo: Path,
    default_name: str,
    png: bytes,
    tmp_path: Path,
    classes: list[dict[str, Any]],
    how: str,
    fragment: str,
) -> None:
    client = client_factory(writable_repo)
    old = client.get(f"/v1/models/{default_name}").json()
    break_bundle(writable_repo / default_name, how, tmp_path, classes)
    response = client.post(f"/v1/models/{default_name}/reload", headers=KEY)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_bundle" and fragment in error["message"]
    assert served_version(client, png) == old["version"]
    assert client.get(f"/v1/models/{default_name}").json()["onnx"]["sha256"] == old["onnx"]["sha256"]
    reg = registry(client)
    assert sample(reg, "stn_model_reloads_total", {"model": default_name, "result": "failure"}) == 1
    assert sample(reg, "stn_rejections_total", {"reason": "invalid_bundle"}) == 1


def test_reload_unknown_and_invalid_names(client_factory: ClientFactory, writable_repo: Path) -> None:
    client = client_factory(writable_repo)
    missing = client.post("/v1/models/not-there/reload", headers=KEY)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    invalid = client.post("/v1/models/bad%20name/reload", headers=KEY)
    assert invalid.status_code == 422 and "invalid model name" in invalid.json()["error"]["message"]


def test_reload_loads_a_new_bundle_folder(
    client_factory: ClientFactory, writable_repo: Path, default_name: str, png: bytes
) -> None:
    client = client_factory(writable_repo)
    shutil.copytree(writable_repo / default_name, writable_repo / "added")
    card = json.loads((writable_repo / "added" / "model.json").read_text())
    card["name"] = "added"
    (writable_repo / "added" / "model.json").write_text(json.dumps(card))
    assert client.post("/v1/models/added/classify", content=png, headers=PNG).status_code == 404
    response = client.post("/v1/models/added/reload", headers=KEY)
    assert response.status_code == 200 and response.json()["status"] == "loaded"
    assert response.json()["previous_version"] is None
    assert client.post("/v1/models/added/classify", content=png, headers=PNG).status_code == 200
    assert "added" in [m["name"] for m in client.get("/v1/models").json()["models"]]


def test_a_held_version_is_retired_only_after_its_requests(
    client_factory: ClientFactory, writable_repo: Path, default_name: str
) -> None:
    """A request that took the model just before a reload keeps it usable until the request ends."""
    client = client_factory(writable_repo)
    old = app_state(client).repository.get(default_name)
    with old.use():  # what a request does right after repository.get()
        set_version(writable_repo / default_name, "3.0.0")
        assert client.post(f"/v1/models/{default_name}/reload", headers=KEY).status_code == 200
        time.sleep(0.1)
        assert not old.batcher.closed  # still accepting this request's images
    wait_until(lambda: old.batcher.closed)
