"""Model cards, the Open Inference Protocol routes, /metrics, the OpenAPI schema and the demo page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.imaging import preprocess
from service.metrics import REJECTION_REASONS
from tests.service.conftest import ClientFactory, make_settings
from tests.service.helpers import TestClient, app_state, gtsrb_originals, open_rgb, registry_of, sample


def test_model_list_and_card(client: TestClient, model_repo: Path, default_name: str) -> None:
    listing = client.get("/v1/models")
    assert listing.status_code == 200
    body = listing.json()
    assert body["default"] == default_name
    names = [m["name"] for m in body["models"]]
    assert default_name in names and names == sorted(names)
    assert all(m["training"] is None for m in body["models"])

    card = client.get(f"/v1/models/{default_name}").json()
    raw = json.loads((model_repo / default_name / "model.json").read_text())
    assert card["name"] == default_name and card["version"] == raw["version"] and card["default"] is True
    assert card["num_classes"] == 43 and card["classes"][14] == raw["classes"][14]
    assert card["input"]["shape"] == [None, 3, 50, 50]
    assert card["input"]["resize"]["method"] == "bilinear"
    assert card["warp_type"] == raw.get("warp_type") and card["sampler"]["train"] == raw["sampler"]["train"]
    assert card["test_error_clean"] == raw["metrics"]["test_error_clean"]
    assert card["onnx"]["sha256"] == raw["onnx"]["sha256"]
    assert card["providers"] == ["CPUExecutionProvider"]
    assert card["training"] == raw.get("training")


def test_unknown_model_card_is_404(client: TestClient) -> None:
    response = client.get("/v1/models/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


def test_v2_server_and_health(client: TestClient) -> None:
    assert client.get("/v2").json() == {"name": "stn-signs", "version": "0.1.0", "extensions": []}
    assert client.get("/v2/health/live").json() == {"live": True}
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True}


def test_v2_model_metadata_and_ready(client: TestClient, default_name: str) -> None:
    meta = client.get(f"/v2/models/{default_name}").json()
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 3, 50, 50]}]
    assert [o["name"] for o in meta["outputs"]] == ["logits", "warp", "crop"]
    assert meta["outputs"][0]["shape"] == [-1, 43]
    assert client.get(f"/v2/models/{default_name}/ready").json() == {"name": default_name, "ready": True}
    missing = client.get("/v2/models/nope/ready")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]  # the protocol's error shape


def test_v2_infer_matches_onnxruntime(
    client: TestClient, model_repo: Path, default_name: str, gtsrb_dir: Path
) -> None:
    images = np.stack([preprocess(open_rgb(p)) for p in gtsrb_originals(gtsrb_dir, 3, stride=211)])
    request: dict[str, Any] = {
        "id": "r1",
        "inputs": [
            {
                "name": "image",
                "shape": list(images.shape),
                "datatype": "FP32",
                "data": images.ravel().tolist(),
            }
        ],
    }
    reg = registry_of(client)
    labels = {"model": default_name, "version": client.get(f"/v1/models/{default_name}").json()["version"]}
    before = sample(reg, "stn_images_classified_total", labels)
    response = client.post(f"/v2/models/{default_name}/infer", json=request)
    assert response.status_code == 200, response.text
    assert sample(reg, "stn_images_classified_total", labels) == before + 3  # v2 images count too
    body = response.json()
    assert body["model_name"] == default_name and body["id"] == "r1"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["logits"]["shape"] == [3, 43] and outputs["warp"]["shape"] == [3, 3, 3]
    assert outputs["crop"]["shape"][:2] == [3, 3] and all(o["datatype"] == "FP32" for o in outputs.values())
    session = ort.InferenceSession(
        str(model_repo / default_name / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    logits, warp = session.run(["logits", "warp"], {"image": images})
    np.testing.assert_allclose(
        np.array(outputs["logits"]["data"]).reshape(3, 43), logits, rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(np.array(outputs["warp"]["data"]).reshape(3, 3, 3), warp, rtol=1e-4, atol=1e-4)

    nested = {**request, "inputs": [{**request["inputs"][0], "data": images[:1].tolist()}]}
    nested["inputs"][0]["shape"] = [1, 3, 50, 50]
    nested["outputs"] = [{"name": "logits"}]
    only = client.post(f"/v2/models/{default_name}/infer", json=nested).json()
    assert [o["name"] for o in only["outputs"]] == ["logits"]
    np.testing.assert_allclose(only["outputs"][0]["data"], logits[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"datatype": "INT8"}, "FP32"),
        ({"shape": [1, 3, 32, 32]}, "input shape"),
        ({"name": "x"}, "one input named 'image'"),
        ({"data": [1.0, 2.0]}, "holds 2 values"),
        ({"data": [[1.0], [2.0, 3.0]]}, "regular array"),
    ],
)
def test_v2_infer_bad_requests_are_400(
    client: TestClient, default_name: str, change: dict[str, Any], fragment: str
) -> None:
    tensor: dict[str, Any] = {
        "name": "image",
        "shape": [1, 3, 50, 50],
        "datatype": "FP32",
        "data": [0.0] * 7500,
    } | change
    response = client.post(f"/v2/models/{default_name}/infer", json={"inputs": [tensor]})
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]
    assert response.json()["request_id"] == response.headers["x-request-id"]


def v2_image(value: float, position: int = 0) -> dict[str, Any]:
    data = [128.0] * 7500
    data[position] = value
    return {"name": "image", "shape": [1, 3, 50, 50], "datatype": "FP32", "data": data}


@pytest.mark.parametrize("value", [1e38, -1e38, 1e30, 255.5, -0.5])
def test_v2_infer_refuses_values_outside_the_value_range(
    client: TestClient, default_name: str, value: float
) -> None:
    """Issue 15: 1e38 (finite FP32) used to make the outputs non-finite and the JSON encoder fail (500)."""
    before = sample(registry_of(client), "stn_rejections_total", {"reason": "invalid_request"})
    response = client.post(
        f"/v2/models/{default_name}/infer",
        json={"inputs": [v2_image(value, position=4321)]},
        headers={"X-Request-ID": "range-1"},
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["request_id"] == "range-1" == response.headers["x-request-id"]
    assert "value range [0, 255]" in body["error"]
    assert sample(registry_of(client), "stn_rejections_total", {"reason": "invalid_request"}) == before + 1


def test_v2_infer_accepts_the_ends_of_the_value_range(client: TestClient, default_name: str) -> None:
    for value in (0.0, 255.0):
        response = client.post(f"/v2/models/{default_name}/infer", json={"inputs": [v2_image(value)]})
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("output", ["logits", "warp", "crop"])
def test_v2_non_finite_outputs_are_a_clear_400(
    client_factory: ClientFactory, model_repo: Path, default_name: str, output: str
) -> None:
    """A model that answers NaN for a valid input: a JSON error naming the output, never non-finite JSON."""
    client = client_factory(model_repo)
    batcher = app_state(client).repository.get(default_name).batcher
    working = batcher.runner
    position = ["logits", "warp", "crop"].index(output)

    def broken(images: Any) -> Any:
        arrays = list(working(images))
        arrays[position] = np.full_like(arrays[position], np.nan)
        return tuple(arrays)

    batcher.runner = broken
    response = client.post(
        f"/v2/models/{default_name}/infer",
        json={"inputs": [v2_image(0.0)], "outputs": [{"name": output}]},
        headers={"X-Request-ID": "nan-2"},
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) == {"error", "request_id"} and body["request_id"] == "nan-2"
    assert f"output {output!r}" in body["error"] and "not finite" in body["error"]
    assert sample(registry_of(client), "stn_rejections_total", {"reason": "non_finite_output"}) == 1


def test_v2_internal_errors_carry_the_request_id(model_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError("bug")

    monkeypatch.setattr("service.routes.v2._check_value_range", explode)
    with TestClient(create_app(make_settings(model_repo)), raise_server_exceptions=False) as client:
        name = client.get("/v1/models").json()["default"]
        response = client.post(
            f"/v2/models/{name}/infer", json={"inputs": [v2_image(0.0)]}, headers={"X-Request-ID": "bug-2"}
        )
        assert response.status_code == 500
        assert response.json() == {
            "error": "internal error; see the server log for this request id",
            "request_id": "bug-2",
        }
        assert sample(registry_of(client), "stn_rejections_total", {"reason": "internal_error"}) == 1


def test_v2_infer_unknown_output_and_model(client: TestClient, default_name: str) -> None:
    tensor = {"name": "image", "shape": [1, 3, 50, 50], "datatype": "FP32", "data": [0.0] * 7500}
    bad = client.post(
        f"/v2/models/{default_name}/infer", json={"inputs": [tensor], "outputs": [{"name": "probs"}]}
    )
    assert bad.status_code == 400 and "probs" in bad.json()["error"]
    assert client.post("/v2/models/nope/infer", json={"inputs": [tensor]}).status_code == 404
    malformed = client.post(f"/v2/models/{default_name}/infer", json={"inputs": "nope"})
    assert malformed.status_code == 400 and "inputs" in malformed.json()["error"]
    missing = client.post(
        "/v2/models/nope/infer", json={"inputs": [tensor]}, headers={"X-Request-ID": "v2-404"}
    )
    assert missing.json() == {"error": missing.json()["error"], "request_id": "v2-404"}


def test_metrics_endpoint(client: TestClient, default_name: str) -> None:
    client.get("/v2/health/live")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    expected = {
        "stn_requests", "stn_request_duration_seconds", "stn_requests_in_flight", "stn_rejections",
        "stn_images_classified", "stn_decode_duration_seconds", "stn_queue_duration_seconds",
        "stn_inference_duration_seconds", "stn_encode_duration_seconds", "stn_batch_size", "stn_queue_depth",
        "stn_model_load_duration_seconds", "stn_model_info", "stn_model_reloads", "stn_predictions",
        "stn_prediction_confidence", "stn_transform_scale", "stn_transform_rotation_degrees",
        "stn_crop_outside_fraction",
    }  # fmt: skip
    assert expected <= set(families)
    reg = registry_of(client)
    info = [s for s in families["stn_model_info"].samples if s.labels["model"] == default_name]
    assert len(info) == 1 and info[0].value == 1.0 and info[0].labels["default"] == "true"
    assert sample(reg, "stn_requests_total", {"route": "/v2/health/live", "status": "200"}) >= 1
    load = sample(
        reg, "stn_model_load_duration_seconds", {"model": default_name, "version": info[0].labels["version"]}
    )
    assert load > 0
    for reason in REJECTION_REASONS:  # pre-created series: get_sample_value is None for a missing one
        assert reg.get_sample_value("stn_rejections_total", {"reason": reason}) is not None, reason
    assert {"internal_error", "not_found", "non_finite_output", "method_not_allowed"} <= set(
        REJECTION_REASONS
    )


def test_every_error_code_is_a_pre_created_reason(client: TestClient) -> None:
    """Every code a 4xx/5xx can carry is one of REJECTION_REASONS, and counting it changes that series."""
    reg = registry_of(client)
    before = {
        r: sample(reg, "stn_rejections_total", {"reason": r}) for r in ("not_found", "method_not_allowed")
    }
    assert client.get("/no/such/page").status_code == 404
    assert client.get("/v1/classify").status_code == 405
    assert sample(reg, "stn_rejections_total", {"reason": "not_found"}) == before["not_found"] + 1
    assert (
        sample(reg, "stn_rejections_total", {"reason": "method_not_allowed"})
        == before["method_not_allowed"] + 1
    )
    codes = {"invalid_request", "payload_too_large", "unsupported_media_type", "inference_error", "timeout"}
    assert codes <= set(REJECTION_REASONS)


def test_metrics_prefix_setting(client_factory: ClientFactory, model_repo: Path) -> None:
    client = client_factory(model_repo, metrics_prefix="signs")
    client.get("/v2/health/live")
    text = client.get("/metrics").text
    assert 'signs_requests_total{route="/v2/health/live",status="200"} 1.0' in text
    assert "signs_model_info{" in text and "stn_" not in text


def test_openapi_documents_every_route(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    expected = {
        ("/v1/classify", "post"), ("/v1/models/{name}/classify", "post"), ("/v1/models", "get"),
        ("/v1/models/{name}", "get"), ("/v1/models/{name}/reload", "post"), ("/v2", "get"),
        ("/v2/health/live", "get"), ("/v2/health/ready", "get"), ("/v2/models/{name}", "get"),
        ("/v2/models/{name}/ready", "get"), ("/v2/models/{name}/infer", "post"), ("/metrics", "get"),
    }  # fmt: skip
    documented = {(path, method) for path, ops in paths.items() for method in ops}
    assert expected <= documented
    for path, method in expected:
        operation = paths[path][method]
        assert operation.get("summary"), (path, method)
        assert "200" in operation["responses"], (path, method)
    body = paths["/v1/classify"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "image/png", "image/jpeg", "image/webp"} <= set(body)
    assert {"404", "413", "415", "422", "503"} <= set(
        paths["/v1/models/{name}/classify"]["post"]["responses"]
    )
    assert {"401", "403"} <= set(paths["/v1/models/{name}/reload"]["post"]["responses"])
    schemas = schema["components"]["schemas"]
    for name in (
        "ClassifyResponse",
        "ModelCardResponse",
        "ErrorResponse",
        "V2InferRequest",
        "V2InferResponse",
    ):
        assert schemas[name].get("examples"), name


def test_demo_page(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200 and "text/html" in response.headers["content-type"]
    assert "/v1/models/" in response.text and "classify" in response.text
