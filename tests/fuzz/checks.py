"""What every answer to a fuzzed upload must look like, for the in-process app and the real server alike.

``check_sample`` sends one corpus sample twice, as the raw body and as the second file of a multipart form
whose first file is a good PNG, and checks both answers: never a 5xx; a 4xx carries the JSON error body
``{"error": {"code", "message", "request_id"}}`` (docs/service.md), the multipart one naming the bad file;
a 200 is a valid classification (response schema, probabilities summing to 1 over all classes, class ids in
range and names from the model card, the crop an image of the default crop format and the asked size); and
both answers agree.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any, Protocol

import httpx
import numpy as np
from PIL import Image

from service.imaging import CROP_MEDIA_TYPES, DEFAULT_CROP_FORMAT
from service.schemas import ClassifyResponse, ImageResult
from tests.fuzz.corpus import Sample

CROP_SIZE = 32
#: every class (top_k is capped at the model's class count), so the probabilities must sum to 1
QUERY = f"?top_k=1000&crop_size={CROP_SIZE}"


class Client(Protocol):
    """The part of ``httpx.Client`` (and Starlette's TestClient) the checks use."""

    def post(self, url: str, **kwargs: Any) -> httpx.Response: ...

    def get(self, url: str, **kwargs: Any) -> httpx.Response: ...


def error_of(response: httpx.Response) -> dict[str, str]:
    """The error object of a 4xx answer, after checking the documented shape."""
    assert 400 <= response.status_code < 500, (
        f"expected a 4xx, got {response.status_code}: {response.text[:300]}"
    )
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict) and set(error) == {"code", "message", "request_id"}, body
    assert isinstance(error["code"], str) and error["code"], body
    assert isinstance(error["message"], str) and error["message"], body
    assert error["request_id"] == response.headers["x-request-id"], body
    return error


def results_of(response: httpx.Response, card: dict[str, Any], images: int) -> list[ImageResult]:
    """The results of a 200 answer, after checking the classification and the crop of each image."""
    assert response.status_code == 200, f"expected 200, got {response.status_code}: {response.text[:300]}"
    body = ClassifyResponse.model_validate(response.json())
    names = {c["id"]: c["name"] for c in card["classes"]}
    assert body.model == card["name"] and len(body.results) == images, body.model
    for result in body.results:
        ids = [p.class_id for p in result.predictions]
        probabilities = [p.probability for p in result.predictions]
        assert sorted(ids) == list(range(card["num_classes"])), ids  # every class once, ids in range
        assert all(p.name == names[p.class_id] for p in result.predictions)
        assert all(0.0 <= p <= 1.0 for p in probabilities)
        assert math.isclose(sum(probabilities), 1.0, abs_tol=1e-5), sum(probabilities)
        assert probabilities == sorted(probabilities, reverse=True)
        assert result.width >= 1 and result.height >= 1
        if result.transform is None:
            assert result.crop is None
        else:
            assert np.all(np.isfinite(result.transform.matrix)) and result.transform.crop_size == CROP_SIZE
            assert 0.0 <= result.transform.outside_fraction <= 1.0
            prefix = f"data:{CROP_MEDIA_TYPES[DEFAULT_CROP_FORMAT]};base64,"
            assert result.crop is not None and result.crop.startswith(prefix), result.crop[:40]
            with Image.open(io.BytesIO(base64.b64decode(result.crop.split(",", 1)[1]))) as crop:
                assert crop.format == DEFAULT_CROP_FORMAT.upper() and crop.size == (CROP_SIZE, CROP_SIZE)
    return body.results


def post_raw(client: Client, sample: Sample, path: str = "/v1/classify") -> httpx.Response:
    headers = {"content-type": sample.content_type} if sample.content_type else {}
    return client.post(path + QUERY, content=sample.data, headers=headers)


def post_multipart(
    client: Client, sample: Sample, reference: bytes, path: str = "/v1/classify"
) -> httpx.Response:
    # An empty type lets httpx send application/octet-stream, the generic part type.
    files = [
        ("file", ("reference.png", reference, "image/png")),
        ("file", (sample.name, sample.data, sample.content_type or None)),
    ]
    return client.post(path + QUERY, files=files)


def outcome(response: httpx.Response) -> tuple[int, str | None]:
    if response.status_code == 200:
        return 200, None
    return response.status_code, error_of(response)["code"]


def check_raw(response: httpx.Response, sample: Sample, card: dict[str, Any]) -> tuple[int, str | None]:
    """Check the raw-body answer against the sample's expectation; returns (status, error code)."""
    assert response.status_code < 500, f"server error {response.status_code}: {response.text[:300]}"
    if sample.status is not None:
        assert response.status_code == sample.status, f"{response.status_code}: {response.text[:300]}"
    if response.status_code == 200:
        (result,) = results_of(response, card, 1)
        if sample.size is not None:
            assert (result.width, result.height) == sample.size
        return 200, None
    code = error_of(response)["code"]
    if sample.codes:
        assert code in sample.codes, f"code {code!r}, expected one of {sorted(sample.codes)}"
    return response.status_code, code


def check_multipart(
    response: httpx.Response, sample: Sample, card: dict[str, Any], raw: tuple[int, str | None]
) -> None:
    """Check the multipart answer: the raw body's outcome (or the sample's part_status), the file named."""
    assert response.status_code < 500, f"server error {response.status_code}: {response.text[:300]}"
    expected = (sample.part_status, None) if sample.part_status is not None else raw
    if expected[0] == 200:
        reference, result = results_of(response, card, 2)
        assert reference.filename == "reference.png" and result.filename == sample.name
        if sample.size is not None:
            assert (result.width, result.height) == sample.size
        return
    error = error_of(response)
    assert (response.status_code, error["code"]) == expected, f"multipart {error}, raw body {raw}"
    assert repr(sample.name) in error["message"], f"the message does not name the file: {error['message']}"


def check_sample(client: Client, sample: Sample, card: dict[str, Any], reference: bytes) -> None:
    """Send ``sample`` as a raw body and as a multipart file; check both answers (module docstring)."""
    raw = check_raw(post_raw(client, sample), sample, card)
    check_multipart(post_multipart(client, sample, reference), sample, card, raw)


def check_serves(client: Client, reference: bytes, card: dict[str, Any]) -> None:
    """A normal request still gets a normal answer."""
    response = client.post("/v1/classify" + QUERY, content=reference, headers={"content-type": "image/png"})
    results_of(response, card, 1)
