"""``POST /v1/classify``, ``POST /v1/models/{name}/classify``: images in; signs, transforms and crops out."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.deps import repository_of
from service.errors import InvalidImage, InvalidRequest, UnsupportedMediaType
from service.fastpath import DirectRoute
from service.imaging import (
    DEFAULT_CROP_FORMAT,
    DEFAULT_CROP_QUALITY,
    IMAGE_CONTENT_TYPES,
    check_image_content_type,
    media_type,
)
from service.inference import ImageOutputs, Reservation
from service.metrics import ServiceMetrics
from service.multipart import MultipartError, boundary_of, parse_form
from service.pipeline import (
    Deadline,
    DecodedImage,
    ImageAnswer,
    Upload,
    infer_step,
    load_step,
    open_step,
    postprocess_step,
)
from service.repository import LoadedModel
from service.schemas import ClassifyResponse, ErrorResponse
from service.settings import MAX_CROP_SIZE, MIN_CROP_SIZE, Settings

router = APIRouter(prefix="/v1", tags=["classify"])

_In = TypeVar("_In")
_Out = TypeVar("_Out")

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

CropFormat = Literal["jpeg", "webp", "png", "none"]


class ClassifyQuery(BaseModel):
    """The query options of a classify request (unknown parameters are ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    top_k: int = Field(
        default=5, ge=1, le=1000, description="number of classes returned (capped at the model's)"
    )
    crop: CropFormat = Field(
        default=DEFAULT_CROP_FORMAT,
        description="the aligned crop as a data URL in this format (`jpeg`, the default, costs the least: "
        "docs/benchmarks.md), or `none` for no crop; `png` is lossless",
    )
    crop_size: int = Field(
        default=128,
        ge=MIN_CROP_SIZE,
        le=MAX_CROP_SIZE,
        description=f"crop pixels a side ({MIN_CROP_SIZE}-{MAX_CROP_SIZE}, or up to SERVICE_MAX_CROP_SIZE "
        "when that is lower)",
    )
    crop_quality: int = Field(
        default=DEFAULT_CROP_QUALITY,
        ge=1,
        le=100,
        description="JPEG and WebP quality of the crop, 1-100 (ignored by png and none)",
    )


_DEFAULT_QUERY = ClassifyQuery()


def parse_query(request: Request) -> ClassifyQuery:
    """The request's :class:`ClassifyQuery`, validated by pydantic as FastAPI would validate query parameters
    (the last value of a repeated parameter counts).

    The classify routes read their options here rather than through FastAPI's parameter injection, which
    costs more than the rest of the route's Python work on a small image (docs/benchmarks.md); the OpenAPI
    schema still documents them (:func:`query_parameters_openapi`).

    Raises:
        RequestValidationError: a value is invalid (422 ``invalid_request``, naming ``query.<name>``).
    """
    if not request.scope.get("query_string"):
        return _DEFAULT_QUERY
    try:
        return ClassifyQuery.model_validate(dict(request.query_params))
    except ValidationError as exc:
        errors = [{**error, "loc": ("query", *error["loc"])} for error in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def query_parameters_openapi(model: type[BaseModel]) -> list[dict[str, Any]]:
    """OpenAPI ``parameters`` (``in: query``, optional) of a pydantic model's fields, from its JSON schema."""
    schema = model.model_json_schema()
    parameters = []
    for name, field_schema in schema["properties"].items():
        field_schema = dict(field_schema)
        description = field_schema.pop("description", "")
        field_schema.pop("title", None)
        parameters.append(
            {
                "name": name,
                "in": "query",
                "required": False,
                "description": description,
                "schema": field_schema,
            }
        )
    return parameters


_MODEL_NAME_PARAMETER: dict[str, Any] = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "model (bundle folder) name",
    "schema": {"type": "string"},
    "example": "stn-linearized",
}


@router.post(
    "/classify",
    summary="Classify traffic-sign images with the default model",
    description="Same as `/v1/models/{name}/classify` on the default model (models/DEFAULT or "
    "SERVICE_DEFAULT_MODEL).",
    response_model=ClassifyResponse,
    responses=ERROR_RESPONSES,
    openapi_extra={**CLASSIFY_OPENAPI, "parameters": query_parameters_openapi(ClassifyQuery)},
)
async def classify_default(request: Request) -> Response:
    options = parse_query(request)
    model = repository_of(request).get(None)
    return await classify(request, model, options)


@router.post(
    "/models/{name}/classify",
    summary="Classify traffic-sign images with a named model",
    description="Per image: the top-k signs with probabilities, the predicted transform (3x3 matrix from "
    "crop pixels to input pixels, corners, scale, rotation), the aligned crop rendered from the original "
    "image, and per-stage timings. Images of one request and of concurrent requests are batched together.",
    response_model=ClassifyResponse,
    responses=ERROR_RESPONSES,
    openapi_extra={
        **CLASSIFY_OPENAPI,
        "parameters": [_MODEL_NAME_PARAMETER, *query_parameters_openapi(ClassifyQuery)],
    },
)
async def classify_named(request: Request) -> Response:
    options = parse_query(request)
    model = repository_of(request).get(request.path_params["name"])
    return await classify(request, model, options)


def direct_routes() -> tuple[DirectRoute, ...]:
    """The classify routes as :class:`service.fastpath.ClassifyFastPath` serves them: the same paths and
    endpoints as the router's (each endpoint takes only the request and parses its own options)."""
    return (
        DirectRoute("/v1/classify", classify_default),
        DirectRoute("/v1/models/{name}/classify", classify_named),
    )


async def read_uploads(request: Request, settings: Settings) -> list[Upload]:
    """The uploaded images: every file part of a multipart form, or the raw body for an image type.

    The body is read whole (the request middleware bounds it, ``SERVICE_MAX_BODY_BYTES``) and a multipart
    form is parsed from memory (:mod:`service.multipart`); plain form fields are ignored.

    Raises:
        UnsupportedMediaType: neither multipart nor an accepted image type, or a file part of another
            type (415).
        BodyTooLarge: from the request middleware while reading (413).
        InvalidRequest: malformed multipart, no file, or more than ``max_images_per_request``.
        InvalidImage: an empty raw body (code empty_image).
    """
    content_type = request.headers.get("content-type", "")
    kind = media_type(content_type)
    if kind == "multipart/form-data":
        try:
            boundary = boundary_of(content_type)
            parts = parse_form(
                await request.body(), boundary, max_files=settings.max_images_per_request, max_fields=100
            )
        except MultipartError as exc:
            raise InvalidRequest(f"cannot read the multipart form: {exc.message}") from exc
        uploads: list[Upload] = []
        for part in parts:
            if not part.is_file:
                continue
            try:
                check_image_content_type(part.content_type, allow_generic=True)
            except UnsupportedMediaType as exc:
                raise UnsupportedMediaType(f"file {part.filename!r}: {exc.message}") from exc
            uploads.append(Upload(data=part.data, filename=part.filename or None))
        if not uploads:
            raise InvalidRequest("the multipart form holds no file; send the image(s) as file part(s)")
        return uploads
    check_image_content_type(kind, allow_generic=False)
    body = await request.body()
    if not body:
        raise InvalidImage("the request body is empty (0 bytes)", code="empty_image")
    return [Upload(data=body)]


async def classify(request: Request, model: LoadedModel, options: ClassifyQuery) -> Response:
    """Read, decode, batch-infer and post-process; the whole path after the body is bounded by the timeout.

    The caller got ``model`` from the repository just before (no ``await`` in between); holding it with
    :meth:`LoadedModel.use` keeps a hot reload from retiring it while this request runs. Settings, metrics
    and the decode executor come from ``app.state`` (:mod:`service.deps` documents them).
    """
    state = request.app.state
    with model.use() as reservation:
        return await _classify(
            request, model, reservation, state.settings, state.metrics, state.decode_executor, options
        )


async def _run_steps(
    executor: Any, inline: list[bool], step: Callable[[_In], _Out], items: list[_In], deadline: Deadline
) -> list[_Out]:
    """``step`` over ``items`` in order: on the event loop where ``inline``, else in the decode executor
    (those run concurrently, within the deadline; the first error of any item is raised)."""
    if all(inline):
        return [step(item) for item in items]
    loop = asyncio.get_running_loop()
    pending = {i: loop.run_in_executor(executor, step, item) for i, item in enumerate(items) if not inline[i]}
    try:
        done = {i: step(item) for i, item in enumerate(items) if inline[i]}
        async with deadline.bound():
            done.update(zip(pending, await asyncio.gather(*pending.values()), strict=True))
    except BaseException:
        for future in pending.values():
            future.cancel()  # not started yet: never runs; running: its result is dropped
        raise
    return [done[i] for i in range(len(items))]


async def _classify(
    request: Request,
    model: LoadedModel,
    reservation: Reservation,
    settings: Settings,
    metrics: ServiceMetrics,
    executor: Any,
    options: ClassifyQuery,
) -> Response:
    if options.crop_size > settings.max_crop_size:
        raise InvalidRequest(
            f"crop_size {options.crop_size} exceeds SERVICE_MAX_CROP_SIZE ({settings.max_crop_size})"
        )
    uploads = await read_uploads(request, settings)
    start = time.perf_counter()
    deadline = Deadline.start(settings.request_timeout_s)
    card = model.card
    bound = metrics.image_metrics(model.name, model.version)
    limit = settings.inline_max_pixels
    # Headers only, on the event loop: cheap at any size, and it tells where the pixels should be decoded.
    opened = [open_step(u, settings.max_image_pixels) for u in uploads]
    decoded = await _run_steps(
        executor,
        [o.pixels <= limit for o in opened],
        functools.partial(load_step, card=card),
        opened,
        deadline,
    )
    for item in decoded:
        bound.decoded(item.decode_seconds)
    outputs = await infer_step(
        reservation,
        [item.tensor for item in decoded],
        deadline=deadline,
        logits_name=card.outputs.logits.name,
    )
    small_crop = options.crop == "none" or options.crop_size * options.crop_size <= limit
    postprocess = functools.partial(
        _postprocess_pair,
        model_name=model.name,
        card=card,
        k=options.top_k,
        crop_format=options.crop,
        crop_size=options.crop_size,
        crop_quality=options.crop_quality,
        request_start=start,
    )
    answers = await _run_steps(
        executor,
        [small_crop and d.image.width * d.image.height <= limit for d in decoded],
        postprocess,
        list(zip(decoded, outputs, strict=True)),
        deadline,
    )
    for answer in answers:
        t = answer.transform
        shape = None if t is None else (t.scale, t.rotation_deg, t.outside_fraction)
        bound.classified(answer.class_id, answer.confidence, answer.encode_seconds, shape)
    body = {
        "request_id": getattr(request.state, "request_id", None),
        "model": model.name,
        "version": model.version,
        "results": [answer.result for answer in answers],
    }
    return Response(orjson.dumps(body), media_type="application/json")


def _postprocess_pair(pair: tuple[DecodedImage, ImageOutputs], **options: Any) -> ImageAnswer:
    """:func:`postprocess_step` of one (decoded image, network outputs) pair."""
    decoded, outputs = pair
    return postprocess_step(decoded, outputs, **options)


__all__ = ["IMAGE_CONTENT_TYPES", "router"]
