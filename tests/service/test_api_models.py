"""Model cards, the Open Inference Protocol routes, /metrics, the OpenAPI schema and the demo page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.imaging import preprocess
from tests.service.conftest import ClientFactory
from tests.service.helpers import TestClient, gtsrb_originals, open_rgb, registry_of, sample


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
    response = client.post(f"/v2/models/{default_name}/infer", json=request)
    assert response.status_code == 200, response.text
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


def test_v2_infer_unknown_output_and_model(client: TestClient, default_name: str) -> None:
    tensor = {"name": "image", "shape": [1, 3, 50, 50], "datatype": "FP32", "data": [0.0] * 7500}
    bad = client.post(
        f"/v2/models/{default_name}/infer", json={"inputs": [tensor], "outputs": [{"name": "probs"}]}
    )
    assert bad.status_code == 400 and "probs" in bad.json()["error"]
    assert client.post("/v2/models/nope/infer", json={"inputs": [tensor]}).status_code == 404
    malformed = client.post(f"/v2/models/{default_name}/infer", json={"inputs": "nope"})
    assert malformed.status_code == 400 and "inputs" in malformed.json()["error"]


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
    assert sample(reg, "stn_rejections_total", {"reason": "overloaded"}) == 0.0  # pre-created series


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
