"""``POST /v1/classify``, ``POST /v1/models/{name}/classify``: images in; signs, transforms and crops out."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from service.deps import DecodeExecutorDep, MetricsDep, RepositoryDep, SettingsDep
from service.errors import InvalidImage, InvalidRequest, UnsupportedMediaType
from service.imaging import (
    DEFAULT_CROP_FORMAT,
    DEFAULT_CROP_QUALITY,
    IMAGE_CONTENT_TYPES,
    check_image_content_type,
    media_type,
)
from service.inference import Reservation
from service.metrics import ServiceMetrics
from service.pipeline import Deadline, DecodedImage, Upload, decode_step, infer_step, postprocess_step
from service.repository import LoadedModel
from service.schemas import ClassifyResponse, ErrorResponse
from service.settings import MAX_CROP_SIZE, MIN_CROP_SIZE, Settings

router = APIRouter(prefix="/v1", tags=["classify"])

_BINARY = {"schema": {"type": "string", "format": "binary"}}
CLASSIFY_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "One or several images as multipart files (any field name, e.g. `file`, repeated), or "
        "one image as the raw body with its image content type.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "array", "items": {"type": "string", "format": "binary"}},
                    },
                    "required": ["file"],
                }
            },
            **{kind: _BINARY for kind in sorted(IMAGE_CONTENT_TYPES)},
        },
    }
}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "unknown model (code model_not_found)"},
    413: {"model": ErrorResponse, "description": "body over SERVICE_MAX_BODY_BYTES (payload_too_large)"},
    415: {"model": ErrorResponse, "description": "not an image type nor multipart (unsupported_media_type)"},
    422: {
        "model": ErrorResponse,
        "description": "bad image or parameter: empty_image, invalid_image, truncated_image, animated_image, "
        "image_too_large, invalid_request",
    },
    500: {"model": ErrorResponse, "description": "onnxruntime failed (inference_error) or internal_error"},
    503: {
        "model": ErrorResponse,
        "description": "queue full or too many requests in progress (overloaded, with Retry-After), "
        "or not ready",
    },
    504: {"model": ErrorResponse, "description": "not done within SERVICE_REQUEST_TIMEOUT_S (timeout)"},
}

TopK = Annotated[int, Query(ge=1, le=1000, description="number of classes returned (capped at the model's)")]
CropFormat = Literal["jpeg", "webp", "png", "none"]
CropMode = Annotated[
    CropFormat,
    Query(
        description="the aligned crop as a data URL in this format (`jpeg`, the default, costs the least: "
        "docs/benchmarks.md), or `none` for no crop; `png` is lossless"
    ),
]
CropSize = Annotated[
    int,
    Query(
        ge=MIN_CROP_SIZE,
        le=MAX_CROP_SIZE,
        description=f"crop pixels a side ({MIN_CROP_SIZE}-{MAX_CROP_SIZE}, or up to SERVICE_MAX_CROP_SIZE "
        "when that is lower)",
    ),
]
CropQuality = Annotated[
    int, Query(ge=1, le=100, description="JPEG and WebP quality of the crop, 1-100 (ignored by png and none)")
]


@dataclass(frozen=True)
class ClassifyOptions:
    """The query options of a classify request."""

    top_k: int = 5
    crop: CropFormat = DEFAULT_CROP_FORMAT
    crop_size: int = 128
    crop_quality: int = DEFAULT_CROP_QUALITY


ModelName = Annotated[str, Path(description="model (bundle folder) name", examples=["stn-linearized"])]


@router.post(
    "/classify",
    summary="Classify traffic-sign images with the default model",
    description="Same as `/v1/models/{name}/classify` on the default model (models/DEFAULT or "
    "SERVICE_DEFAULT_MODEL).",
    response_model=ClassifyResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=CLASSIFY_OPENAPI,
)
async def classify_default(
    request: Request,
    repository: RepositoryDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    executor: DecodeExecutorDep,
    top_k: TopK = 5,
    crop: CropMode = DEFAULT_CROP_FORMAT,
    crop_size: CropSize = 128,
    crop_quality: CropQuality = DEFAULT_CROP_QUALITY,
) -> ClassifyResponse:
    model = repository.get(None)
    options = ClassifyOptions(top_k, crop, crop_size, crop_quality)
    return await classify(request, model, settings, metrics, executor, options)


@router.post(
    "/models/{name}/classify",
    summary="Classify traffic-sign images with a named model",
    description="Per image: the top-k signs with probabilities, the predicted transform (3x3 matrix from "
    "crop pixels to input pixels, corners, scale, rotation), the aligned crop rendered from the original "
    "image, and per-stage timings. Images of one request and of concurrent requests are batched together.",
    response_model=ClassifyResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=CLASSIFY_OPENAPI,
)
async def classify_named(
    request: Request,
    name: ModelName,
    repository: RepositoryDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    executor: DecodeExecutorDep,
    top_k: TopK = 5,
    crop: CropMode = DEFAULT_CROP_FORMAT,
    crop_size: CropSize = 128,
    crop_quality: CropQuality = DEFAULT_CROP_QUALITY,
) -> ClassifyResponse:
    model = repository.get(name)
    options = ClassifyOptions(top_k, crop, crop_size, crop_quality)
    return await classify(request, model, settings, metrics, executor, options)


class _MultiPartParser(MultiPartParser):
    """Starlette's multipart parser that also closes the file of a part cut off before its boundary.

    Starlette creates a file part's spooled temporary file when the part's headers end, but hands it over
    (and so lets the caller close it) only when the part's closing boundary arrives: a body that ends inside
    a file part left that file open until garbage collection (a ResourceWarning; found by tests/fuzz).
    ``cut_files`` counts such parts, so the request can be refused as incomplete.
    """

    cut_files = 0

    async def parse(self) -> FormData:
        form = await super().parse()
        handed_over = {id(value.file) for _, value in form.multi_items() if isinstance(value, UploadFile)}
        for file in getattr(self, "_files_to_close_on_error", ()):
            if id(file) not in handed_over:
                file.close()
                self.cut_files += 1
        return form


async def read_form(request: Request, max_files: int) -> FormData:
    """Parse a multipart body (closing every temporary file on any failure).

    Raises:
        InvalidRequest: malformed multipart, too many parts, or a file part cut off before its end.
        BodyTooLarge: from the request middleware while reading (413).
    """
    async with contextlib.aclosing(request.stream()) as stream:
        parser = _MultiPartParser(request.headers, stream, max_files=max_files, max_fields=100)
        try:
            form = await parser.parse()
        except MultiPartException as exc:  # malformed multipart or too many parts
            raise InvalidRequest(f"cannot read the multipart form: {exc.message}") from exc
    if parser.cut_files:
        await form.close()
        raise InvalidRequest(
            "cannot read the multipart form: the body ends inside a file part (an incomplete upload)"
        )
    return form


async def read_uploads(request: Request, settings: Settings) -> list[Upload]:
    """The uploaded images: every file part of a multipart form, or the raw body for an image type.

    Raises:
        UnsupportedMediaType: neither multipart nor an accepted image type, or a file part of another
            type (415).
        BodyTooLarge: from the request middleware while reading (413).
        InvalidRequest: malformed multipart, no file, or more than ``max_images_per_request``.
        InvalidImage: an empty raw body (code empty_image).
    """
    kind = media_type(request.headers.get("content-type"))
    if kind == "multipart/form-data":
        form = await read_form(request, settings.max_images_per_request)
        try:
            uploads: list[Upload] = []
            for _, value in form.multi_items():
                if isinstance(value, UploadFile):
                    try:
                        check_image_content_type(value.content_type, allow_generic=True)
                    except UnsupportedMediaType as exc:
                        raise UnsupportedMediaType(f"file {value.filename!r}: {exc.message}") from exc
                    uploads.append(Upload(data=await value.read(), filename=value.filename or None))
        finally:
            await form.close()
        if not uploads:
            raise InvalidRequest("the multipart form holds no file; send the image(s) as file part(s)")
        return uploads
    check_image_content_type(kind, allow_generic=False)
    body = await request.body()
    if not body:
        raise InvalidImage("the request body is empty (0 bytes)", code="empty_image")
    return [Upload(data=body)]


async def classify(
    request: Request,
    model: LoadedModel,
    settings: Settings,
    metrics: ServiceMetrics,
    executor: Any,
    options: ClassifyOptions,
) -> ClassifyResponse:
    """Read, decode, batch-infer and post-process; the whole path after the body is bounded by the timeout.

    The caller got ``model`` from the repository just before (no ``await`` in between); holding it with
    :meth:`LoadedModel.use` keeps a hot reload from retiring it while this request runs.
    """
    with model.use() as reservation:
        return await _classify(request, model, reservation, settings, metrics, executor, options)


async def _classify(
    request: Request,
    model: LoadedModel,
    reservation: Reservation,
    settings: Settings,
    metrics: ServiceMetrics,
    executor: Any,
    options: ClassifyOptions,
) -> ClassifyResponse:
    if options.crop_size > settings.max_crop_size:
        raise InvalidRequest(
            f"crop_size {options.crop_size} exceeds SERVICE_MAX_CROP_SIZE ({settings.max_crop_size})"
        )
    uploads = await read_uploads(request, settings)
    start = time.perf_counter()
    deadline = Deadline.start(settings.request_timeout_s)
    labels = (model.name, model.version)
    loop = asyncio.get_running_loop()
    card = model.card
    async with deadline.bound():
        decoded: list[DecodedImage] = list(
            await asyncio.gather(
                *(
                    loop.run_in_executor(executor, decode_step, u, card, settings.max_image_pixels)
                    for u in uploads
                )
            )
        )
    for item in decoded:
        metrics.decode_duration.labels(*labels).observe(item.decode_seconds)
    outputs = await infer_step(
        reservation,
        [item.tensor for item in decoded],
        deadline=deadline,
        logits_name=card.outputs.logits.name,
    )
    async with deadline.bound():
        results = await asyncio.gather(
            *(
                loop.run_in_executor(
                    executor,
                    functools.partial(
                        postprocess_step,
                        d,
                        o,
                        model_name=model.name,
                        card=card,
                        k=options.top_k,
                        crop_format=options.crop,
                        crop_size=options.crop_size,
                        crop_quality=options.crop_quality,
                        request_start=start,
                    ),
                )
                for d, o in zip(decoded, outputs, strict=True)
            )
        )
    for result, confidence, encode_seconds in results:
        metrics.encode_duration.labels(*labels).observe(encode_seconds)
        metrics.images.labels(*labels).inc()
        metrics.predictions.labels(*labels, str(result.predictions[0].class_id)).inc()
        metrics.confidence.labels(*labels).observe(confidence)
        if result.transform is not None:
            metrics.transform_scale.labels(*labels).observe(result.transform.scale)
            metrics.transform_rotation.labels(*labels).observe(result.transform.rotation_deg)
            metrics.crop_outside.labels(*labels).observe(result.transform.outside_fraction)
    return ClassifyResponse(
        request_id=getattr(request.state, "request_id", None),
        model=model.name,
        version=model.version,
        results=[r for r, _, _ in results],
    )


__all__ = ["IMAGE_CONTENT_TYPES", "router"]
