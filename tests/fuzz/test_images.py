"""Corpus-driven image fuzzing (tests/fuzz/corpus.py) of the decoder, /v1 classify and /v2 infer, in process.

Every sample goes to ``POST /v1/classify`` as a raw body and as a multipart file (tests/fuzz/checks.py says
what the answers must be: never a 5xx). The decode-level test runs the same corpus through
:func:`service.imaging.decode_image` with warnings as errors (the suite's setting); the HTTP tests ignore
Pillow's own warnings about the corrupt files, as a production process does, so that their expectations are
the production behaviour (e.g. a JPEG with a corrupt EXIF block is still classified).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from service.app import create_app
from service.errors import InvalidImage
from service.imaging import decode_image, preprocess
from tests.fuzz import checks
from tests.fuzz.corpus import Sample
from tests.service.conftest import make_settings
from tests.service.helpers import TestClient, registry_of

FAMILIES = [
    "encoding",
    "truncated",
    "bitflip",
    "extreme_size",
    "bomb",
    "exif",
    "mode",
    "animated",
    "empty",
    "random",
    "content_type",
]
MAX_PIXELS = 40_000_000  # the default SERVICE_MAX_IMAGE_PIXELS, which the test settings keep
#: Pillow warns about the corrupt files it reads (EXIF, APNG); a production process just logs that.
PILLOW_WARNINGS_AS_IN_PRODUCTION = pytest.mark.filterwarnings("ignore::UserWarning:PIL")


@pytest.fixture(scope="module")
def card(fuzz_client: TestClient, fuzz_default_model: str) -> dict[str, Any]:
    response = fuzz_client.get(f"/v1/models/{fuzz_default_model}")
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.fixture(scope="module")
def reference(corpus: list[Sample]) -> bytes:
    """A good PNG of a real sign (the first file of every multipart upload)."""
    return next(s.data for s in corpus if s.name == "sign0.png")


def test_corpus_covers_every_family(corpus: list[Sample]) -> None:
    assert sorted({s.family for s in corpus}) == sorted(FAMILIES)
    assert len(corpus) >= 300


def test_decoder_never_raises_anything_but_invalid_image(corpus: list[Sample]) -> None:
    """Under warnings-as-errors too: a decoder failure of any kind is an InvalidImage (422), never a 500."""
    failures = []
    for sample in corpus:
        try:
            image = decode_image(sample.data, max_pixels=MAX_PIXELS)
            tensor = preprocess(image)
        except InvalidImage as exc:
            if sample.status == 200 and not sample.name.startswith("jpeg-exif-"):  # see below
                failures.append(f"{sample.name}: refused ({exc.code}: {exc.message})")
            continue
        except Exception as exc:
            failures.append(f"{sample.name}: {type(exc).__name__}: {exc}")
            continue
        if tensor.shape != (3, 50, 50) or not np.all(np.isfinite(tensor)):
            failures.append(f"{sample.name}: network input {tensor.shape}")
        if sample.status not in (None, 200, 415):
            failures.append(f"{sample.name}: decoded, expected {sample.status} {sorted(sample.codes)}")
        elif sample.size is not None and sample.status == 200 and image.size != sample.size:
            failures.append(f"{sample.name}: size {image.size}, expected {sample.size}")
    # Under warnings-as-errors, Pillow's JPEG reader turns its warning about a corrupt EXIF block into an
    # exception while opening the file (it reads the DPI from EXIF): those JPEGs are refused here (422),
    # where production decodes them. Everything else matches the HTTP expectations.
    assert not failures, "\n".join(failures)


@PILLOW_WARNINGS_AS_IN_PRODUCTION
@pytest.mark.parametrize("family", FAMILIES)
def test_classify_corpus(
    fuzz_client: TestClient, corpus: list[Sample], card: dict[str, Any], reference: bytes, family: str
) -> None:
    samples = [s for s in corpus if s.family == family]
    failures = []
    for sample in samples:
        try:
            checks.check_sample(fuzz_client, sample, card, reference)
        except AssertionError as exc:
            failures.append(f"{sample.name}: {exc}")
    assert not failures, f"{len(failures)} of {len(samples)} samples failed:\n" + "\n".join(failures)
    checks.check_serves(fuzz_client, reference, card)


def _multipart(*parts: bytes, boundary: bytes = b"fuzz") -> bytes:
    return (
        b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts) + b"--" + boundary + b"--\r\n"
    )


def _file_part(
    data: bytes, *, name: bytes = b"file", filename: bytes = b"a.png", kind: bytes = b"image/png"
) -> bytes:
    disposition = b'Content-Disposition: form-data; name="' + name + b'"; filename="' + filename + b'"'
    return disposition + b"\r\nContent-Type: " + kind + b"\r\n\r\n" + data


def malformed_multipart(png: bytes) -> list[tuple[str, bytes, str, int, str | None]]:
    """(label, body, content type, status, code) of multipart bodies that are broken in their framing."""
    form = "multipart/form-data; boundary=fuzz"
    good = _multipart(_file_part(png))
    head = good.index(b"\r\n\r\n") + 4  # where the file's bytes start
    invalid = "invalid_request"
    cases = [
        ("no-boundary", good, "multipart/form-data", 422, invalid),
        ("empty-boundary", good, "multipart/form-data; boundary=", 422, invalid),
        ("other-boundary", good, "multipart/form-data; boundary=other", 422, invalid),
        ("empty-body", b"", form, 422, invalid),
        ("only-the-end", b"--fuzz--\r\n", form, 422, invalid),
        (
            "a-field-no-file",
            _multipart(b'Content-Disposition: form-data; name="x"\r\n\r\nhello'),
            form,
            422,
            invalid,
        ),
        ("no-disposition", _multipart(b"Content-Type: image/png\r\n\r\n" + png), form, 422, invalid),
        ("no-name", _multipart(_file_part(png).replace(b' name="file";', b"")), form, 422, invalid),
        (
            "101-fields",
            _multipart(*[b'Content-Disposition: form-data; name="f"\r\n\r\nx'] * 101),
            form,
            422,
            invalid,
        ),
        ("33-files", _multipart(*[_file_part(png)] * 33), form, 422, invalid),
        (
            "nested-multipart-part",
            _multipart(_file_part(png, kind=b"multipart/mixed")),
            form,
            415,
            "unsupported_media_type",
        ),
        ("unknown-charset", good, form + "; charset=no-such-charset", 200, None),
        (
            "non-utf8-names",
            _multipart(_file_part(png, name=b"\xff\xfe", filename=b"\xff.png")),
            form,
            200,
            None,
        ),
        ("empty-filename", _multipart(_file_part(png, filename=b"")), form, 200, None),
        ("epilogue", good + b"epilogue\r\n", form, 200, None),
        ("preamble", b"preamble\r\n" + good, form, 200, None),  # RFC 2046 allows a preamble
        ("big-file-spooled-to-disk", _multipart(_file_part(png + b"\x00" * 1_500_000)), form, 200, None),
    ]
    # A body cut inside the file part (the client gave up): refused, and its temporary file is closed.
    cases.append(("cut-in-part-headers", good[: head - 2], form, 422, invalid))  # no file part yet
    for cut in (head, head + 10, len(good) - 20, len(good) - 9):
        cases.append((f"cut-in-file-at-{cut}", good[:cut], form, 422, invalid))
    return cases


@PILLOW_WARNINGS_AS_IN_PRODUCTION
def test_malformed_multipart(fuzz_client: TestClient, card: dict[str, Any], reference: bytes) -> None:
    failures = []
    for label, body, kind, status, code in malformed_multipart(reference):
        response = fuzz_client.post(
            "/v1/classify" + checks.QUERY, content=body, headers={"content-type": kind}
        )
        try:
            if status == 200:
                checks.results_of(response, card, 1)
            else:
                error = checks.error_of(response)
                assert (response.status_code, error["code"]) == (status, code), error
                if label.startswith("cut-in-file-"):
                    assert "incomplete upload" in error["message"], error
        except AssertionError as exc:
            failures.append(f"{label}: {exc}")
    assert not failures, "\n".join(failures)
    checks.check_serves(fuzz_client, reference, card)


# ---- /v2 infer ----


def _tensor_request(data: Any, shape: list[Any], **changes: Any) -> dict[str, Any]:
    tensor = {"name": "image", "shape": shape, "datatype": "FP32", "data": data}
    body: dict[str, Any] = {"inputs": [tensor]}
    for key, value in changes.items():
        if key in tensor:
            tensor[key] = value
        else:
            body[key] = value
    return body


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def test_v2_infer_agrees_with_classify(
    fuzz_client: TestClient, corpus: list[Sample], card: dict[str, Any], fuzz_default_model: str
) -> None:
    """The corpus's decodable signs, preprocessed by the client, through /v2 infer: the /v1 probabilities."""
    samples = [s for s in corpus if s.family in ("encoding", "extreme_size") and s.status == 200][::3]
    url = f"/v2/models/{fuzz_default_model}/infer"
    tensors = []
    for sample in samples:
        tensor = preprocess(decode_image(sample.data, max_pixels=MAX_PIXELS))
        tensors.append(tensor)
        nested = fuzz_client.post(url, json=_tensor_request(tensor[None].tolist(), [1, 3, 50, 50]))
        flat = fuzz_client.post(url, json=_tensor_request(tensor.reshape(-1).tolist(), [1, 3, 50, 50]))
        assert nested.status_code == 200 and flat.status_code == 200, (sample.name, nested.text[:200])
        assert nested.json()["outputs"] == flat.json()["outputs"]
        logits = next(o for o in flat.json()["outputs"] if o["name"] == card["outputs"]["logits"]["name"])
        v2 = _softmax(np.asarray(logits["data"], dtype=np.float64))
        v1 = checks.results_of(checks.post_raw(fuzz_client, sample), card, 1)[0]
        v1_probabilities = np.zeros(card["num_classes"])
        for p in v1.predictions:
            v1_probabilities[p.class_id] = p.probability
        np.testing.assert_allclose(v2, v1_probabilities, atol=1e-5, err_msg=sample.name)
    batch = np.stack(tensors)
    response = fuzz_client.post(url, json=_tensor_request(batch.reshape(-1).tolist(), list(batch.shape)))
    assert response.status_code == 200, response.text[:300]
    shapes = {o["name"]: o["shape"] for o in response.json()["outputs"]}
    assert shapes[card["outputs"]["logits"]["name"]] == [len(tensors), card["num_classes"]]


def _raw_json(tensor: str) -> bytes:
    """A request body whose data list is written verbatim (JSON tokens such as NaN or 400-digit integers)."""
    return (
        b'{"inputs": [{"name": "image", "shape": [1, 3, 50, 50], "datatype": "FP32", "data": ['
        + tensor.encode()
        + b"]}]}"
    )


ZEROS = ", ".join(["0"] * 7499)


def v2_malformed() -> list[tuple[str, Any, int]]:
    good = [0.0] * 7500
    shape = [1, 3, 50, 50]
    return [
        ("nan", _raw_json("NaN, " + ZEROS), 400),
        ("above-value-range", _tensor_request([1e38, *good[1:]], shape), 400),  # issue 15: was a 500
        ("below-value-range", _tensor_request([-1e38, *good[1:]], shape), 400),
        ("just-above-255", _tensor_request([255.001, *good[1:]], shape), 400),
        ("infinity", _raw_json("-Infinity, " + ZEROS), 400),
        ("null", _tensor_request([None, *good[1:]], shape), 400),
        ("strings", _tensor_request(["a", *good[1:]], shape), 400),
        ("objects", _tensor_request([{"a": 1}, *good[1:]], shape), 400),
        ("ragged", _tensor_request([[0.0], [0.0, 0.0]], shape), 400),
        ("too-deep", _tensor_request(json.loads("[" * 80 + "0" + "]" * 80), shape), 400),
        (
            "json-nesting-beyond-recursion",
            b'{"inputs": [{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]}",
            400,
        ),
        ("one-value-short", _tensor_request(good[1:], shape), 400),
        ("empty-data", _tensor_request([], shape), 400),
        ("wrong-shape", _tensor_request(good, [1, 3, 50, 49]), 400),
        ("zero-images", _tensor_request([], [0, 3, 50, 50]), 400),
        ("negative-batch", _tensor_request(good, [-1, 3, 50, 50]), 400),
        ("huge-batch", _tensor_request(good, [10**12, 3, 50, 50]), 400),
        ("huge-dimension", _tensor_request(good, [1, 3, 50, 50, 2**70]), 400),
        ("too-many-images", _tensor_request([0.0] * 7500 * 33, [33, 3, 50, 50]), 400),
        ("fp64", _tensor_request(good, shape, datatype="FP64"), 400),
        ("no-datatype", _tensor_request(good, shape, datatype=""), 400),
        ("wrong-input-name", _tensor_request(good, shape, name="input"), 400),
        ("unknown-output", _tensor_request(good, shape, outputs=[{"name": "nope"}]), 400),
        ("no-inputs", {"inputs": []}, 400),
        ("not-an-object", [1, 2, 3], 400),
        ("not-json", b"\x89PNG\r\n\x1a\n", 400),
        ("empty-body", b"", 400),
        ("unknown-model", _tensor_request(good, shape), 404),
    ]


def _post_v2(client: TestClient, model: str, body: Any) -> httpx.Response:
    url = f"/v2/models/{model}/infer"
    if isinstance(body, bytes):
        return client.post(url, content=body, headers={"content-type": "application/json"})
    return client.post(url, json=body)


def _v2_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, f"{response.status_code} {response.text[:300]}"
    error = response.json()
    assert set(error) == {"error", "request_id"} and isinstance(error["error"], str) and error["error"], error
    assert error["request_id"] == response.headers["x-request-id"], error


def test_v2_infer_malformed(fuzz_client: TestClient, fuzz_default_model: str) -> None:
    failures = []
    for label, body, status in v2_malformed():
        model = "no-such-model" if label == "unknown-model" else fuzz_default_model
        try:
            _v2_error(_post_v2(fuzz_client, model, body), status)
        except AssertionError as exc:
            failures.append(f"{label}: {exc}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("value", ["1e39", "1" * 400], ids=["float-beyond-fp32", "400-digit-integer"])
def test_v2_infer_out_of_range_numbers(e2e_repo: Path, fuzz_default_model: str, value: str) -> None:
    # Its own app, so that the expected 500s do not count against test_service_survives_the_corpus.
    with TestClient(create_app(make_settings(e2e_repo))) as client:
        _v2_error(_post_v2(client, fuzz_default_model, _raw_json(value + ", " + ZEROS)), 400)


def test_service_survives_the_corpus(
    fuzz_client: TestClient, card: dict[str, Any], reference: bytes, fuzz_default_model: str
) -> None:
    """After everything above (the same module-scoped app): still serving, and not one 5xx answered."""
    checks.check_serves(fuzz_client, reference, card)
    assert fuzz_client.get("/v2/health/ready").json() == {"ready": True}
    with Image.open(io.BytesIO(reference)) as image:
        tensor = preprocess(image.convert("RGB"))
    request = _tensor_request(tensor.reshape(-1).tolist(), [1, 3, 50, 50])
    assert _post_v2(fuzz_client, fuzz_default_model, request).status_code == 200
    server_errors = {
        (sample.labels["route"], sample.labels["status"]): sample.value
        for metric in registry_of(fuzz_client).collect()
        for sample in metric.samples
        if sample.name == "stn_requests_total" and sample.labels["status"].startswith("5") and sample.value
    }
    assert not server_errors, server_errors
