"""The Open Inference Protocol (KServe v2) REST endpoints, so standard clients and tooling work.

Errors on these routes use the protocol's ``{"error": "<message>"}`` body (see ``service.app``).
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse

from service import __version__
from service.deps import MetricsDep, RepositoryDep, SettingsDep
from service.errors import InvalidRequest, NotReady
from service.inference import Reservation
from service.metrics import ServiceMetrics
from service.pipeline import Deadline, infer_step, require_finite
from service.repository import LoadedModel, ModelRepository
from service.schemas import (
    V2Error,
    V2InferRequest,
    V2InferResponse,
    V2Live,
    V2ModelMetadata,
    V2ModelReady,
    V2Ready,
    V2ServerMetadata,
    V2TensorMetadata,
)
from service.settings import Settings

router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])

SERVER_NAME = "stn-signs"
ModelName = Annotated[str, Path(description="model name", examples=["stn-linearized"])]
V2_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": V2Error,
        "description": "bad request (shape, datatype, data outside the model's value range), or a model "
        "output that is not finite",
    },
    404: {"model": V2Error, "description": "unknown model"},
    503: {"model": V2Error, "description": "not ready"},
}
V2_INFER_ERRORS: dict[int | str, dict[str, Any]] = {
    **V2_ERRORS,
    413: {"model": V2Error, "description": "request body over SERVICE_MAX_BODY_BYTES"},
    503: {
        "model": V2Error,
        "description": "queue full or too many requests in progress (with Retry-After), or not ready",
    },
    500: {"model": V2Error, "description": "onnxruntime failed, or an internal error"},
    504: {"model": V2Error, "description": "not done within SERVICE_REQUEST_TIMEOUT_S"},
    "4XX": {"model": V2Error, "description": "any other client error"},
}


_FP32_MAX = float(np.finfo(np.float32).max)


def _fp32_data(values: list[Any]) -> np.ndarray[Any, np.dtype[np.float32]]:
    """The request's data (flat or nested JSON numbers) as a float32 array, checked to be FP32 values.

    The conversion goes through float64 so that a value beyond the FP32 range is refused with a reason
    rather than overflowing to infinity in the cast; a JSON integer too large even for float64 (Python
    parses any number of digits) raises OverflowError, also refused.

    Raises:
        InvalidRequest: ragged or non-numeric data, or a value that is not finite or beyond FP32's range.
    """
    try:
        wide = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidRequest(f"input data is not a regular array of numbers: {exc}") from exc
    if not np.all(np.isfinite(wide)):
        raise InvalidRequest("input data must be finite")
    if wide.size and float(np.max(np.abs(wide))) > _FP32_MAX:
        raise InvalidRequest(f"input data holds a value beyond the FP32 range (|x| > {_FP32_MAX:.6g})")
    return wide.astype(np.float32)


def _check_value_range(data: np.ndarray[Any, np.dtype[np.float32]], value_range: tuple[float, float]) -> None:
    """Refuse input values outside the model card's ``input.value_range`` (e.g. [0, 255]).

    Such values are no image the model was trained on, and far outside it (1e38) the network's outputs stop
    being finite.

    Raises:
        InvalidRequest: some value lies outside ``value_range`` (400 on /v2).
    """
    low, high = value_range
    if data.size == 0:
        return
    smallest, largest = float(np.min(data)), float(np.max(data))
    if smallest < low or largest > high:
        raise InvalidRequest(
            f"input data must lie in the model's value range [{low:g}, {high:g}] (input.value_range of its "
            f"card: RGB 0..255); got values from {smallest:.6g} to {largest:.6g}"
        )


def _dims(shape: list[int | None]) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in shape]


@router.get("", summary="Server metadata", response_model=V2ServerMetadata)
async def server_metadata() -> V2ServerMetadata:
    return V2ServerMetadata(name=SERVER_NAME, version=__version__, extensions=[])


@router.get("/health/live", summary="Liveness: the process serves HTTP", response_model=V2Live)
async def live() -> V2Live:
    return V2Live(live=True)


@router.get(
    "/health/ready",
    summary="Readiness: the default model is loaded (503 otherwise)",
    response_model=V2Ready,
    responses={503: {"model": V2Ready, "description": "not ready"}},
)
async def ready(repository: RepositoryDep) -> Any:
    if not repository.ready:
        return JSONResponse({"ready": False}, status_code=503)
    return V2Ready(ready=True)


@router.get("/models/{name}", summary="Model metadata", response_model=V2ModelMetadata, responses=V2_ERRORS)
async def model_metadata(name: ModelName, repository: RepositoryDep) -> V2ModelMetadata:
    model = repository.get(name)
    card = model.card
    return V2ModelMetadata(
        name=model.name,
        versions=[model.version],
        platform="onnxruntime_onnx",
        inputs=[V2TensorMetadata(name=card.input.name, datatype="FP32", shape=_dims(card.input.shape))],
        outputs=[
            V2TensorMetadata(name=spec.name, datatype="FP32", shape=_dims(spec.shape))
            for spec in (card.outputs.logits, card.outputs.warp, card.outputs.crop)
        ],
    )


@router.get(
    "/models/{name}/ready", summary="Model readiness", response_model=V2ModelReady, responses=V2_ERRORS
)
async def model_ready(name: ModelName, repository: RepositoryDep) -> V2ModelReady:
    model = repository.get(name)
    return V2ModelReady(name=model.name, ready=not repository.closed)


@router.post(
    "/models/{name}/infer",
    summary="Run the model on a tensor in its own input layout",
    description="One input named as the model's (`image`), datatype FP32, shape [N, 3, 50, 50], RGB 0..255 "
    "row-major (flat or nested); values outside the card's `input.value_range` ([0, 255]) are refused (400). "
    "Returns the requested outputs (default: logits, warp, crop) as flat FP32 data. The images join the "
    "model's dynamic batches like classify requests and count in `stn_images_classified_total`.",
    response_model=V2InferResponse,
    responses=V2_INFER_ERRORS,
)
async def infer(
    name: ModelName,
    body: V2InferRequest,
    repository: RepositoryDep,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> JSONResponse:
    model = repository.get(name)
    with model.use() as reservation:  # a hot reload retires this version only after the request
        return await _infer(model, reservation, body, repository, settings, metrics)


async def _infer(
    model: LoadedModel,
    reservation: Reservation,
    body: V2InferRequest,
    repository: ModelRepository,
    settings: Settings,
    metrics: ServiceMetrics,
) -> JSONResponse:
    card = model.card
    if len(body.inputs) != 1 or body.inputs[0].name != card.input.name:
        raise InvalidRequest(f"expected exactly one input named {card.input.name!r}")
    tensor = body.inputs[0]
    if tensor.datatype != "FP32":
        raise InvalidRequest(f"input datatype must be FP32, got {tensor.datatype!r}")
    width, height = card.input_size
    shape = tensor.shape
    if len(shape) != 4 or shape[1:] != [3, height, width] or shape[0] < 1:
        raise InvalidRequest(f"input shape must be [N, 3, {height}, {width}] with N >= 1, got {shape}")
    if shape[0] > settings.max_images_per_request:
        raise InvalidRequest(f"at most {settings.max_images_per_request} images per request, got {shape[0]}")
    data = _fp32_data(tensor.data)
    if data.size != int(np.prod(shape)):
        raise InvalidRequest(
            f"input data holds {data.size} values, shape {shape} needs {int(np.prod(shape))}"
        )
    _check_value_range(data, card.input.value_range)
    images = data.reshape(shape)
    known = {card.outputs.logits.name, card.outputs.warp.name, card.outputs.crop.name}
    wanted = (
        [o.name for o in body.outputs]
        if body.outputs
        else [
            card.outputs.logits.name,
            card.outputs.warp.name,
            card.outputs.crop.name,
        ]
    )
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise InvalidRequest(f"unknown output(s) {unknown}; the model has {sorted(known)}")
    results = await infer_step(
        reservation,
        list(images),
        deadline=Deadline.start(settings.request_timeout_s),
        logits_name=card.outputs.logits.name,
    )
    if repository.closed:
        raise NotReady("the service is shutting down")
    arrays = {
        card.outputs.logits.name: np.stack([r.logits for r in results]),
        card.outputs.warp.name: np.stack([r.warp for r in results]),
        card.outputs.crop.name: np.stack([r.crop for r in results]),
    }
    for n in wanted:
        require_finite(n, arrays[n])
    metrics.images.labels(model.name, model.version).inc(len(results))
    outputs = [
        {
            "name": n,
            "shape": list(arrays[n].shape),
            "datatype": "FP32",
            "data": arrays[n].astype(np.float32).reshape(-1).tolist(),
        }
        for n in wanted
    ]
    return JSONResponse(
        {"model_name": model.name, "model_version": model.version, "id": body.id, "outputs": outputs}
    )
