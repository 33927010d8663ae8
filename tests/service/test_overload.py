"""Admission control through HTTP: 503 + Retry-After when the queue is full, 504 past the request timeout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.app import create_app
from tests.service.conftest import ClientFactory, make_settings
from tests.service.gate import Background, install_gate, wait_until
from tests.service.helpers import TestClient, app_state, encode, photo_like, registry_of, sample

PNG = {"content-type": "image/png"}


@pytest.fixture(scope="module")
def png() -> bytes:
    return encode(photo_like(60, 60))


def test_full_queue_answers_503_with_retry_after(
    client_factory: ClientFactory, model_repo: Path, default_name: str, png: bytes
) -> None:
    client = client_factory(model_repo, queue_size=1, max_batch_size=1, max_delay_ms=0.0, retry_after_s=2)
    registry = registry_of(client)
    version = client.get(f"/v1/models/{default_name}").json()["version"]
    depth = {"model": default_name, "version": version}
    gate = install_gate(client, default_name)
    first = Background(client, "/v1/classify", content=png, headers=PNG)
    assert gate.entered.wait(10)  # the first image is inside onnxruntime, blocked
    second = Background(client, "/v1/classify", content=png, headers=PNG)
    wait_until(lambda: sample(registry, "stn_queue_depth", depth) == 1.0)  # the second waits in the queue
    try:
        refused = client.post("/v1/classify", content=png, headers=PNG)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "2"
        assert refused.json()["error"]["code"] == "overloaded"
        assert "1 images queued, limit 1" in refused.json()["error"]["message"]
        assert sample(registry, "stn_rejections_total", {"reason": "overloaded"}) == 1
        assert sample(registry, "stn_requests_total", {"route": "/v1/classify", "status": "503"}) == 1
    finally:
        gate.release.set()
    assert first.result().status_code == 200
    assert second.result().status_code == 200
    assert sample(registry, "stn_queue_depth", depth) == 0.0
    assert client.post("/v1/classify", content=png, headers=PNG).status_code == 200


def test_request_timeout_is_504(
    client_factory: ClientFactory, model_repo: Path, default_name: str, png: bytes
) -> None:
    client = client_factory(model_repo, request_timeout_s=0.3)
    registry = registry_of(client)
    gate = install_gate(client, default_name)
    try:
        response = client.post("/v1/classify", content=png, headers=PNG)
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "timeout"
        assert sample(registry, "stn_rejections_total", {"reason": "timeout"}) == 1
    finally:
        gate.release.set()
    assert client.post("/v1/classify", content=png, headers=PNG).status_code == 200


def test_inference_failure_is_a_json_500_and_the_model_keeps_serving(
    client_factory: ClientFactory, model_repo: Path, default_name: str, png: bytes
) -> None:
    client = client_factory(model_repo)
    batcher = app_state(client).repository.get(default_name).batcher
    working = batcher.runner

    def broken(images: Any) -> Any:
        raise RuntimeError("device lost")

    batcher.runner = broken
    response = client.post("/v1/classify", content=png, headers=PNG)
    assert response.status_code == 500
    assert (
        response.json()["error"]["code"] == "inference_error"
        and "device lost" in response.json()["error"]["message"]
    )
    assert sample(registry_of(client), "stn_rejections_total", {"reason": "inference_error"}) == 1
    batcher.runner = working
    assert client.post("/v1/classify", content=png, headers=PNG).status_code == 200


def test_unexpected_errors_are_a_json_500(
    model_repo: Path, monkeypatch: pytest.MonkeyPatch, png: bytes
) -> None:
    def explode(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError("bug")

    monkeypatch.setattr("service.routes.classify.postprocess_step", explode)
    with TestClient(create_app(make_settings(model_repo)), raise_server_exceptions=False) as client:
        response = client.post("/v1/classify", content=png, headers={**PNG, "X-Request-ID": "bug-1"})
    assert response.status_code == 500 and response.headers["x-request-id"] == "bug-1"
    assert response.json() == {
        "error": {
            "code": "internal_error",
            "message": "internal error; see the server log for this request id",
            "request_id": "bug-1",
        }
    }
