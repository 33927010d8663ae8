"""Admission control through HTTP: 503 + Retry-After when the queue is full or too many requests are in
progress (before the body is read), 504 past the request timeout, 499 for a client that leaves mid-upload."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from service.app import create_app
from tests.service.conftest import ClientFactory, make_settings
from tests.service.gate import Background, install_gate, wait_until
from tests.service.helpers import (
    TestClient,
    app_state,
    call_asgi,
    encode,
    photo_like,
    registry_of,
    sample,
)

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


@pytest.mark.parametrize(
    ("limit", "settings", "message"),
    [
        pytest.param(
            "requests in progress",
            {"max_concurrent_requests": 1},
            "1 requests in progress, limit 1",
            id="requests",
        ),
        pytest.param(
            "queue",
            {"queue_size": 1, "max_batch_size": 1, "max_delay_ms": 0.0},
            "1 images queued, limit 1",
            id="queue",
        ),
    ],
)
def test_overload_is_refused_before_the_body_is_read(
    client_factory: ClientFactory,
    model_repo: Path,
    default_name: str,
    png: bytes,
    limit: str,
    settings: dict[str, Any],
    message: str,
) -> None:
    """With the limit reached, a request gets its 503 without the app reading (or decoding) its body."""
    client = client_factory(model_repo, retry_after_s=3, **settings)
    batcher = app_state(client).repository.get(default_name).batcher
    gate = install_gate(client, default_name)
    held = [Background(client, "/v1/classify", content=png, headers=PNG)]
    try:
        assert gate.entered.wait(10)  # one request in progress, its image inside onnxruntime
        if limit == "queue":
            held.append(Background(client, "/v1/classify", content=png, headers=PNG))
            wait_until(lambda: batcher.depth == 1)  # and one image waiting: the queue is full
        body = {"type": "http.request", "body": png, "more_body": False}
        sent, receives = call_asgi(client, "/v1/classify", PNG, [body])
    finally:
        gate.release.set()
    assert sent[0]["status"] == 503 and (b"retry-after", b"3") in sent[0]["headers"]
    error = json.loads(sent[1]["body"])["error"]
    assert error["code"] == "overloaded" and message in error["message"]
    assert receives == 0
    assert all(request.result().status_code == 200 for request in held)


@pytest.mark.parametrize("multipart", [False, True])
def test_a_client_gone_mid_upload_is_a_499_not_an_error(
    client_factory: ClientFactory,
    model_repo: Path,
    png: bytes,
    multipart: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = client_factory(model_repo)
    registry = registry_of(client)
    headers = {"content-type": "multipart/form-data; boundary=xyz" if multipart else "image/png"}
    headers["content-length"] = str(len(png) + 200)
    first = (
        b"--xyz\r\nContent-Disposition: form-data; name=file; filename=a.png\r\n\r\n" if multipart else b""
    )
    messages = [
        {"type": "http.request", "body": first + png[:100], "more_body": True},
        {"type": "http.disconnect"},
    ]
    with caplog.at_level(logging.INFO):
        sent, _ = call_asgi(client, "/v1/classify", headers, messages)
    assert sent == []  # nobody to answer
    assert sample(registry, "stn_requests_total", {"route": "/v1/classify", "status": "499"}) == 1
    assert sample(registry, "stn_requests_total", {"route": "/v1/classify", "status": "500"}) == 0
    assert sample(registry, "stn_client_disconnects_total") == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


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
