"""POST /v1/classify and /v1/models/{name}/classify through TestClient: results, options, every bad input."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image, ImageOps
from prometheus_client import CollectorRegistry

from service.geometry import outside_fraction
from service.imaging import DEFAULT_CROP_FORMAT, render_crop
from service.settings import MAX_CROP_SIZE, Settings
from tests.service.conftest import ClientFactory
from tests.service.helpers import (
    TestClient,
    app_state,
    encode,
    gtsrb_originals,
    open_rgb,
    photo_like,
    raw_png,
    registry_of,
    sample,
)

PNG = {"content-type": "image/png"}


@pytest.fixture(scope="module")
def sign_png(gtsrb_dir: Path) -> bytes:
    return (gtsrb_dir / "test_originals" / "00042.png").read_bytes()


def registry(client: TestClient) -> CollectorRegistry:
    return registry_of(client)


def error_of(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code, body
    assert body["error"]["request_id"] == response.headers["x-request-id"]
    return str(body["error"]["message"])


def probabilities(result: dict[str, Any]) -> np.ndarray:
    return np.array([p["probability"] for p in result["predictions"]])


def test_raw_body_classification(client: TestClient, sign_png: bytes, default_name: str) -> None:
    reg = registry(client)
    model_labels = {
        "model": default_name,
        "version": client.get(f"/v1/models/{default_name}").json()["version"],
    }
    before_images = sample(reg, "stn_images_classified_total", model_labels)
    before_requests = sample(reg, "stn_requests_total", {"route": "/v1/classify", "status": "200"})
    before_conf = sample(reg, "stn_prediction_confidence_count", model_labels)
    before_scale = sample(reg, "stn_transform_scale_count", model_labels)
    before_rot = sample(reg, "stn_transform_rotation_degrees_count", model_labels)
    before_outside = sample(reg, "stn_crop_outside_fraction_count", model_labels)
    before_batch = sample(reg, "stn_batch_size_count", model_labels)
    before_stage = {
        s: sample(reg, f"stn_{s}_duration_seconds_count", model_labels) for s in ("decode", "queue", "encode")
    }

    response = client.post("/v1/classify", content=sign_png, headers={**PNG, "X-Request-ID": "req-abc.1"})
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "req-abc.1"
    body = response.json()
    assert body["request_id"] == "req-abc.1"
    assert body["model"] == default_name and len(body["results"]) == 1
    result = body["results"][0]
    image = Image.open(io.BytesIO(sign_png))
    assert (result["width"], result["height"]) == image.size
    assert result["filename"] is None and result["model"] == default_name
    preds = result["predictions"]
    assert len(preds) == 5
    p = probabilities(result)
    assert np.all(np.diff(p) <= 0) and 0 < p.sum() <= 1.0 + 1e-9
    assert all(0 <= q["class_id"] < 43 and q["name"] for q in preds)

    transform = result["transform"]
    matrix = np.array(transform["matrix"])
    assert matrix.shape == (3, 3) and matrix[2, 2] == pytest.approx(1.0)
    s = transform["crop_size"]
    assert s == 128
    hom = matrix @ np.array([[0, s, s, 0], [0, 0, s, s], [1, 1, 1, 1]], dtype=float)
    np.testing.assert_allclose(np.array(transform["corners"]), (hom[:2] / hom[2]).T, rtol=1e-9, atol=1e-9)
    warp = np.array(transform["network_warp"])
    # matrix = diag(W/50, H/50, 1) @ warp @ canonical_from_crop, up to the normalisation of [2, 2]
    full = (
        np.diag([image.width / 50, image.height / 50, 1])
        @ warp
        @ np.array([[36 / s, 0, 7], [0, 36 / s, 7], [0, 0, 1]])
    )
    np.testing.assert_allclose(matrix, full / full[2, 2], rtol=1e-6, atol=1e-6)
    assert transform["scale"] > 0 and -180 <= transform["rotation_deg"] <= 180
    assert transform["outside_fraction"] == pytest.approx(
        outside_fraction(transform["corners"], image.size), abs=1e-12
    )

    assert result["crop"].startswith("data:image/jpeg;base64,")  # the default format
    crop = Image.open(io.BytesIO(base64.b64decode(result["crop"].split(",", 1)[1])))
    assert crop.format == "JPEG" and crop.size == (128, 128) and crop.mode == "RGB"
    timings = result["timings"]
    assert timings["batch_size"] >= 1
    assert all(timings[k] >= 0 for k in ("decode_ms", "queue_ms", "inference_ms", "encode_ms"))
    assert timings["total_ms"] >= timings["decode_ms"]

    top = str(preds[0]["class_id"])
    assert sample(reg, "stn_images_classified_total", model_labels) == before_images + 1
    assert (
        sample(reg, "stn_requests_total", {"route": "/v1/classify", "status": "200"}) == before_requests + 1
    )
    assert sample(reg, "stn_predictions_total", {**model_labels, "class_id": top}) >= 1
    assert sample(reg, "stn_prediction_confidence_count", model_labels) == before_conf + 1
    assert sample(reg, "stn_transform_scale_count", model_labels) == before_scale + 1
    assert sample(reg, "stn_transform_rotation_degrees_count", model_labels) == before_rot + 1
    assert sample(reg, "stn_crop_outside_fraction_count", model_labels) == before_outside + 1
    assert sample(reg, "stn_batch_size_count", model_labels) == before_batch + 1
    for stage, count in before_stage.items():
        assert sample(reg, f"stn_{stage}_duration_seconds_count", model_labels) == count + 1, stage


def test_named_route_and_multipart_batch(client: TestClient, default_name: str, gtsrb_dir: Path) -> None:
    paths = gtsrb_originals(gtsrb_dir, 3, stride=97)
    files = [("file", (p.name, p.read_bytes(), "image/png")) for p in paths]
    response = client.post(f"/v1/models/{default_name}/classify?top_k=3&crop=none", files=files)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["filename"] for r in results] == [p.name for p in paths]
    assert all(len(r["predictions"]) == 3 and r["crop"] is None and r["transform"] for r in results)
    # the same image alone through the default route gives the same probabilities (batching is transparent)
    single = client.post("/v1/classify?top_k=3", content=paths[1].read_bytes(), headers=PNG).json()[
        "results"
    ][0]
    np.testing.assert_allclose(probabilities(single), probabilities(results[1]), rtol=1e-5, atol=1e-7)
    assert [q["class_id"] for q in single["predictions"]] == [
        q["class_id"] for q in results[1]["predictions"]
    ]


def test_generic_part_type_and_any_field_name(client: TestClient, sign_png: bytes) -> None:
    response = client.post(
        "/v1/classify", files=[("images", ("x.bin", sign_png, "application/octet-stream"))]
    )
    assert response.status_code == 200, response.text


def test_options(client: TestClient, sign_png: bytes) -> None:
    big = client.post("/v1/classify?top_k=1000&crop_size=64", content=sign_png, headers=PNG).json()[
        "results"
    ][0]
    assert len(big["predictions"]) == 43  # capped at the model's classes
    assert abs(sum(p["probability"] for p in big["predictions"]) - 1.0) < 1e-6
    crop = Image.open(io.BytesIO(base64.b64decode(big["crop"].split(",", 1)[1])))
    assert crop.size == (64, 64)
    other = client.post("/v1/classify?crop_size=200", content=sign_png, headers=PNG).json()["results"][0]
    np.testing.assert_allclose(big["transform"]["corners"], other["transform"]["corners"], rtol=1e-9)


@pytest.mark.parametrize(
    "query",
    [
        "top_k=0",
        "crop=gif",
        "crop=true",
        "crop_size=4",
        "crop_size=600",
        f"crop_size={MAX_CROP_SIZE + 1}",
        "top_k=abc",
        "crop_quality=0",
        "crop_quality=101",
    ],
    ids=lambda q: q,
)
def test_bad_query_parameters(client: TestClient, sign_png: bytes, query: str) -> None:
    before = sample(registry(client), "stn_rejections_total", {"reason": "invalid_request"})
    message = error_of(
        client.post(f"/v1/classify?{query}", content=sign_png, headers=PNG), 422, "invalid_request"
    )
    assert query.split("=")[0] in message
    assert sample(registry(client), "stn_rejections_total", {"reason": "invalid_request"}) == before + 1


def test_unknown_model_is_404(client: TestClient, sign_png: bytes) -> None:
    before = sample(registry(client), "stn_rejections_total", {"reason": "model_not_found"})
    message = error_of(
        client.post("/v1/models/nope/classify", content=sign_png, headers=PNG), 404, "model_not_found"
    )
    assert "'nope'" in message
    assert sample(registry(client), "stn_rejections_total", {"reason": "model_not_found"}) == before + 1
    assert (
        sample(
            registry(client), "stn_requests_total", {"route": "/v1/models/{name}/classify", "status": "404"}
        )
        >= 1
    )


def test_unknown_route_is_a_json_404(client: TestClient) -> None:
    response = client.get("/v1/nothing-here")
    assert error_of(response, 404, "not_found")
    assert sample(registry(client), "stn_requests_total", {"route": "unmatched", "status": "404"}) >= 1


@pytest.mark.parametrize(
    ("headers", "kind"),
    [
        ({"content-type": "text/plain"}, "'text/plain'"),
        ({}, "(none)"),
        ({"content-type": "application/json"}, "json"),
    ],
)
def test_unsupported_media_type(
    client: TestClient, sign_png: bytes, headers: dict[str, str], kind: str
) -> None:
    before = sample(registry(client), "stn_rejections_total", {"reason": "unsupported_media_type"})
    message = error_of(
        client.post("/v1/classify", content=sign_png, headers=headers), 415, "unsupported_media_type"
    )
    assert kind in message
    assert (
        sample(registry(client), "stn_rejections_total", {"reason": "unsupported_media_type"}) == before + 1
    )


def test_unsupported_part_type(client: TestClient, sign_png: bytes) -> None:
    response = client.post("/v1/classify", files=[("file", ("a.txt", sign_png, "text/plain"))])
    error_of(response, 415, "unsupported_media_type")


def test_payload_too_large(
    client_factory: ClientFactory, model_repo: Path, default_name: str, sign_png: bytes
) -> None:
    assert len(sign_png) > 4096
    client = client_factory(model_repo, max_body_bytes=4096)
    message = error_of(client.post("/v1/classify", content=sign_png, headers=PNG), 413, "payload_too_large")
    assert "4096" in message
    chunks = (sign_png[i : i + 1000] for i in range(0, len(sign_png), 1000))  # chunked: no Content-Length
    error_of(client.post("/v1/classify", content=chunks, headers=PNG), 413, "payload_too_large")
    files = [("file", ("a.png", sign_png, "image/png"))]
    error_of(client.post("/v1/classify", files=files), 413, "payload_too_large")
    assert sample(registry(client), "stn_rejections_total", {"reason": "payload_too_large"}) == 3
    assert sample(registry(client), "stn_requests_total", {"route": "/v1/classify", "status": "413"}) == 3
    tensor = {"name": "image", "shape": [1, 3, 50, 50], "datatype": "FP32", "data": [0.0] * 7500}
    infer = client.post(f"/v2/models/{default_name}/infer", json={"inputs": [tensor]})  # a JSON body
    assert infer.status_code == 413 and "4096" in infer.json()["error"]  # the protocol's error shape
    assert sample(registry(client), "stn_rejections_total", {"reason": "payload_too_large"}) == 4
    ok = client.post("/v1/classify", content=encode(photo_like(20, 20)), headers=PNG)
    assert ok.status_code == 200


def _animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (16, 16), (70 * i, 20, 20)) for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format=fmt, save_all=True, append_images=frames[1:], duration=40, loop=0)
    return buffer.getvalue()


BAD_IMAGES = {
    "empty": (b"", "empty_image"),
    "garbage": (b"GIF89a but not really" * 4, "invalid_image"),
    "truncated": (encode(photo_like(80, 80))[:700], "truncated_image"),
    "zero_size": (raw_png(0, 0, idat=b""), "invalid_image"),
    "animated_gif": (_animated("GIF"), "animated_image"),
    "animated_webp": (_animated("WEBP"), "animated_image"),
}


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_bad_images_are_422(client: TestClient, case: str) -> None:
    data, code = BAD_IMAGES[case]
    before = sample(registry(client), "stn_rejections_total", {"reason": code})
    kind = "image/gif" if case == "animated_gif" else "image/webp" if case == "animated_webp" else "image/png"
    error_of(client.post("/v1/classify", content=data, headers={"content-type": kind}), 422, code)
    assert sample(registry(client), "stn_rejections_total", {"reason": code}) == before + 1
    files = [("file", ("ok.png", encode(photo_like()), "image/png")), ("file", (f"{case}.img", data, kind))]
    message = error_of(client.post("/v1/classify", files=files), 422, code)
    assert f"{case}.img" in message  # the message names the bad file


def test_decompression_bomb_refused_before_decoding(client_factory: ClientFactory, model_repo: Path) -> None:
    client = client_factory(model_repo, max_image_pixels=1_000_000)
    bomb = raw_png(5000, 5000, idat=b"\x78\x9c\x03\x00\x00\x00\x00\x01")  # 25 Mpx declared, no pixel data
    message = error_of(client.post("/v1/classify", content=bomb, headers=PNG), 422, "image_too_large")
    assert "5000x5000" in message and "before decoding" in message
    assert sample(registry(client), "stn_rejections_total", {"reason": "image_too_large"}) == 1
    huge = raw_png(60_000, 60_000, idat=b"")  # past Pillow's own guard too
    error_of(client.post("/v1/classify", content=huge, headers=PNG), 422, "image_too_large")


def test_multipart_without_files_and_too_many_files(client_factory: ClientFactory, model_repo: Path) -> None:
    client = client_factory(model_repo, max_images_per_request=2)
    no_file = client.post("/v1/classify", files={"note": (None, "a text field, no file")})
    assert "no file" in error_of(no_file, 422, "invalid_request")
    png = encode(photo_like(12, 12))
    files = [("file", (f"{i}.png", png, "image/png")) for i in range(3)]
    assert "multipart" in error_of(client.post("/v1/classify", files=files), 422, "invalid_request")


def _classify(client: TestClient, data: bytes, kind: str = "image/png") -> dict[str, Any]:
    response = client.post("/v1/classify?top_k=43&crop_size=32", content=data, headers={"content-type": kind})
    assert response.status_code == 200, response.text
    return dict(response.json()["results"][0])


def _same_result(a: dict[str, Any], b: dict[str, Any]) -> None:
    order_a = {p["class_id"]: p["probability"] for p in a["predictions"]}
    order_b = {p["class_id"]: p["probability"] for p in b["predictions"]}
    assert order_a.keys() == order_b.keys()
    for class_id, prob in order_a.items():
        assert prob == pytest.approx(order_b[class_id], rel=1e-5, abs=1e-7)


@pytest.fixture(scope="module")
def sign(gtsrb_dir: Path) -> Image.Image:
    return open_rgb(gtsrb_dir / "test_originals" / "00042.png")


def test_grayscale_upload(client: TestClient, sign: Image.Image) -> None:
    gray = sign.convert("L")
    _same_result(_classify(client, encode(gray)), _classify(client, encode(gray.convert("RGB"))))


def test_palette_upload(client: TestClient, sign: Image.Image) -> None:
    palette = sign.quantize(64)
    _same_result(_classify(client, encode(palette)), _classify(client, encode(palette.convert("RGB"))))


def test_rgba_upload_composited_on_white(client: TestClient, sign: Image.Image) -> None:
    rgba = sign.convert("RGBA")
    alpha = np.full(sign.size[::-1], 255, dtype=np.uint8)
    alpha[:, : sign.width // 3] = 0  # left third transparent
    rgba.putalpha(Image.fromarray(alpha))
    white = Image.new("RGB", sign.size, (255, 255, 255))
    white.paste(sign, mask=Image.fromarray(alpha))
    _same_result(_classify(client, encode(rgba)), _classify(client, encode(white)))


def test_cmyk_upload(client: TestClient, sign: Image.Image) -> None:
    jpeg = encode(sign.convert("CMYK"), "JPEG", quality=95)
    decoded = Image.open(io.BytesIO(jpeg))
    assert decoded.mode == "CMYK"
    _same_result(_classify(client, jpeg, "image/jpeg"), _classify(client, encode(decoded.convert("RGB"))))


def test_16_bit_upload(client: TestClient, sign: Image.Image) -> None:
    import zlib

    gray8 = np.asarray(sign.convert("L"), dtype=np.uint16)
    gray16 = (gray8 * 257).astype(">u2")  # exact 16-bit version of the 8-bit image
    raw = b"".join(b"\x00" + row.tobytes() for row in gray16)
    data = raw_png(sign.width, sign.height, bit_depth=16, color_type=0, idat=zlib.compress(raw))
    _same_result(_classify(client, data), _classify(client, encode(Image.fromarray(gray8.astype(np.uint8)))))


def test_exif_orientation(client: TestClient, sign: Image.Image) -> None:
    exif = Image.Exif()
    exif[0x0112] = 8  # display needs a 90 degree counter-clockwise turn
    jpeg = encode(sign, "JPEG", quality=95, exif=exif.tobytes())
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(jpeg)))
    assert upright is not None
    result = _classify(client, jpeg, "image/jpeg")
    assert (result["width"], result["height"]) == (sign.height, sign.width)
    _same_result(result, _classify(client, encode(upright)))


def test_ppm_and_webp_uploads(client: TestClient, sign: Image.Image) -> None:
    ppm = _classify(client, encode(sign, "PPM"), "image/x-portable-pixmap")
    webp = _classify(client, encode(sign, "WEBP", lossless=True), "image/webp")
    _same_result(ppm, webp)


def data_url_image(url: str, media_type: str) -> Image.Image:
    prefix = f"data:{media_type};base64,"
    assert url.startswith(prefix), url[:40]
    image = Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :])))
    image.load()
    return image


#: Largest mean absolute difference (grey levels, over all pixels and channels) of a lossy crop from the
#: exact (PNG) rendering at the default quality 90, coarse rendering included (service.imaging.render_crop):
#: at most 3.5 (JPEG) and 3.3 (WebP) over 200 GTSRB photos (benchmarks/crop_encode.py).
LOSSY_TOLERANCE = {"jpeg": 4.0, "webp": 4.0}


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_crop_formats_decode_and_match_the_png_rendering(
    client: TestClient, gtsrb_dir: Path, fmt: str
) -> None:
    """Each format is a data URL of that type that decodes to the crop; PNG is the rendering itself
    (lossless), JPEG and WebP stay within a mean absolute difference of it."""
    path = gtsrb_originals(gtsrb_dir, 1, stride=1)[0]
    upload = path.read_bytes()
    result = client.post(f"/v1/classify?crop={fmt}&crop_size=96", content=upload, headers=PNG).json()[
        "results"
    ][0]
    media = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}[fmt]
    crop = data_url_image(result["crop"], media)
    assert crop.format == fmt.upper() and crop.size == (96, 96) and crop.mode == "RGB"
    rendered = np.asarray(
        render_crop(open_rgb(path), np.array(result["transform"]["matrix"]), 96), dtype=float
    )
    pixels = np.asarray(crop, dtype=float)
    if fmt == "png":
        np.testing.assert_array_equal(pixels, rendered)
    else:
        assert np.abs(pixels - rendered).mean() <= LOSSY_TOLERANCE[fmt]
    png = client.post("/v1/classify?crop=png&crop_size=96", content=upload, headers=PNG).json()["results"][0]
    lossless = np.asarray(data_url_image(png["crop"], "image/png"), dtype=float)
    np.testing.assert_array_equal(lossless, rendered)


def test_crop_quality_changes_lossy_crops_only(client: TestClient, sign_png: bytes) -> None:
    def crop_bytes(query: str) -> int:
        result = client.post(f"/v1/classify?{query}", content=sign_png, headers=PNG).json()["results"][0]
        return len(result["crop"])

    assert crop_bytes("crop=jpeg&crop_quality=30") < crop_bytes("crop=jpeg&crop_quality=95")
    assert crop_bytes("crop=webp&crop_quality=30") < crop_bytes("crop=webp&crop_quality=95")
    assert crop_bytes("crop=png&crop_quality=30") == crop_bytes("crop=png&crop_quality=95")


def test_no_crop_and_the_default_format(client: TestClient, sign_png: bytes) -> None:
    none = client.post("/v1/classify?crop=none", content=sign_png, headers=PNG).json()["results"][0]
    assert none["crop"] is None and none["transform"] is not None
    default = client.post("/v1/classify", content=sign_png, headers=PNG).json()["results"][0]
    assert DEFAULT_CROP_FORMAT == "jpeg" and default["crop"].startswith("data:image/jpeg;base64,")
    parameters = client.get("/openapi.json").json()["paths"]["/v1/classify"]["post"]["parameters"]
    crop = next(p for p in parameters if p["name"] == "crop")["schema"]
    assert crop["default"] == "jpeg" and set(crop["enum"]) == {"jpeg", "webp", "png", "none"}
    quality = next(p for p in parameters if p["name"] == "crop_quality")["schema"]
    assert (quality["default"], quality["minimum"], quality["maximum"]) == (90, 1, 100)


def test_one_crop_size_limit(client_factory: ClientFactory, model_repo: Path, sign_png: bytes) -> None:
    """The query parameter's bound (so the OpenAPI schema) and the setting's default and bound are one
    constant."""
    client = client_factory(model_repo)
    schema = client.get("/openapi.json").json()
    for path in ("/v1/classify", "/v1/models/{name}/classify"):
        parameters = schema["paths"][path]["post"]["parameters"]
        crop_size = next(p for p in parameters if p["name"] == "crop_size")["schema"]
        assert crop_size["maximum"] == MAX_CROP_SIZE
    assert Settings().max_crop_size == MAX_CROP_SIZE
    assert Settings.model_fields["max_crop_size"].default == MAX_CROP_SIZE
    with pytest.raises(ValueError, match="max_crop_size"):
        Settings(max_crop_size=MAX_CROP_SIZE + 1)
    ok = client.post(f"/v1/classify?crop=none&crop_size={MAX_CROP_SIZE}", content=sign_png, headers=PNG)
    assert ok.status_code == 200 and ok.json()["results"][0]["transform"]["crop_size"] == MAX_CROP_SIZE
    lower = client_factory(model_repo, max_crop_size=64)
    message = error_of(
        lower.post("/v1/classify?crop_size=65", content=sign_png, headers=PNG), 422, "invalid_request"
    )
    assert "SERVICE_MAX_CROP_SIZE (64)" in message


def replace_outputs(client: TestClient, name: str, *, warp: Any = None, logits: Any = None) -> None:
    """Make the model's batcher return its real outputs with ``warp`` and/or ``logits`` replaced."""
    batcher = app_state(client).repository.get(name).batcher
    working = batcher.runner

    def runner(images: Any) -> Any:
        real_logits, real_warp, crop = working(images)
        new_warp = real_warp if warp is None else np.broadcast_to(warp, real_warp.shape).astype(np.float32)
        new_logits = real_logits if logits is None else np.full_like(real_logits, logits)
        return new_logits, new_warp.copy(), crop

    batcher.runner = runner


def test_outside_fraction_of_a_hand_made_warp_reaches_the_response_and_the_metric(
    client_factory: ClientFactory, model_repo: Path, default_name: str
) -> None:
    """The network's warp replaced by a shift of 25 in its 50x50 frame: on a 50x50 upload the crop covers
    x 32..68, half of it outside the image (computed by hand); the response and the histogram carry 0.5."""
    client = client_factory(model_repo)
    replace_outputs(client, default_name, warp=np.array([[1, 0, 25], [0, 1, 0], [0, 0, 1]]))
    reg = registry_of(client)
    labels = {"model": default_name, "version": client.get(f"/v1/models/{default_name}").json()["version"]}
    upload = encode(photo_like(50, 50))
    result = client.post("/v1/classify?crop_size=36", content=upload, headers=PNG).json()["results"][0]
    transform = result["transform"]
    np.testing.assert_allclose(transform["corners"], [[32, 7], [68, 7], [68, 43], [32, 43]], atol=1e-5)
    assert transform["outside_fraction"] == pytest.approx(0.5, abs=1e-6)
    crop = np.asarray(data_url_image(result["crop"], "image/jpeg"), dtype=float)
    assert crop[:, 24:].mean() < 8 < crop[:, :12].mean()  # the crop's right half is the black padding
    assert sample(reg, "stn_crop_outside_fraction_bucket", {**labels, "le": "0.2"}) == 0
    assert sample(reg, "stn_crop_outside_fraction_bucket", {**labels, "le": "0.5"}) == 1
    assert sample(reg, "stn_crop_outside_fraction_sum", labels) == pytest.approx(0.5, abs=1e-6)


def test_non_finite_logits_are_a_clear_error(
    client_factory: ClientFactory, model_repo: Path, default_name: str, sign_png: bytes
) -> None:
    client = client_factory(model_repo)
    replace_outputs(client, default_name, logits=np.nan)
    response = client.post("/v1/classify", content=sign_png, headers={**PNG, "X-Request-ID": "nan-1"})
    message = error_of(response, 422, "non_finite_output")
    assert "'logits'" in message and "not finite" in message
    assert response.json()["error"]["request_id"] == "nan-1"
    assert sample(registry_of(client), "stn_rejections_total", {"reason": "non_finite_output"}) == 1
