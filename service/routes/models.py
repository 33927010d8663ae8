"""``GET /v1/models`` and ``GET /v1/models/{name}``: the model cards of the loaded models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path

from service.deps import RepositoryDep
from service.repository import LoadedModel, ModelRepository
from service.schemas import ClassInfo, ErrorResponse, ModelCardResponse, ModelList

router = APIRouter(prefix="/v1", tags=["models"])


def model_card(model: LoadedModel, repository: ModelRepository, *, with_training: bool) -> ModelCardResponse:
    """The public card of a loaded model (from its model.json plus load facts)."""
    card = model.card
    metrics = card.metrics or {}

    def fraction(key: str) -> float | None:
        value = metrics.get(key)
        return float(value) if isinstance(value, int | float) else None

    return ModelCardResponse(
        name=model.name,
        version=model.version,
        default=model.name == repository.default_name,
        description=card.description,
        model_type=card.model_type,
        arch=card.arch,
        warp_type=card.warp_type,
        sampler=card.sampler.model_dump() if card.sampler else None,
        downsampling_rate=card.downsampling_rate,
        num_classes=len(card.classes),
        classes=[ClassInfo(id=c.id, name=c.name) for c in card.classes],
        input=card.input.model_dump(),
        outputs=card.outputs.model_dump(),
        canonical_crop=card.canonical_crop.model_dump(),
        test_error_clean=fraction("test_error_clean"),
        test_error_perturbed=fraction("test_error_perturbed"),
        metrics=dict(card.metrics) if card.metrics is not None else None,
        onnx={"file": card.onnx.file, "opset": card.onnx.opset, "sha256": model.bundle.sha256},
        created=card.created,
        loaded_at=datetime.fromtimestamp(model.bundle.loaded_at, tz=UTC).isoformat(timespec="seconds"),
        load_seconds=model.bundle.load_seconds,
        providers=model.bundle.providers,
        training=dict(card.training) if with_training and card.training is not None else None,
    )


@router.get(
    "/models",
    summary="List the loaded models",
    description="The model card of every loaded model (without the training details) and the default's name.",
    response_model=ModelList,
)
async def list_models(repository: RepositoryDep) -> ModelList:
    return ModelList(
        default=repository.default_name,
        models=[model_card(m, repository, with_training=False) for m in repository.models()],
    )


@router.get(
    "/models/{name}",
    summary="Show one model's card",
    description="Classes, input size, sampler, warp type, test errors, sha256 of the served ONNX file, "
    "training facts and load facts.",
    response_model=ModelCardResponse,
    responses={
        404: {"model": ErrorResponse, "description": "unknown model (model_not_found)"},
        # Declared so that FastAPI does not document its default 422 body ({"detail": [...]}), which this
        # service never sends: its validation errors use the service's error body.
        422: {"model": ErrorResponse, "description": "invalid request (invalid_request)"},
    },
)
async def get_model(
    name: Annotated[str, Path(description="model name", examples=["stn-linearized"])],
    repository: RepositoryDep,
) -> ModelCardResponse:
    return model_card(repository.get(name), repository, with_training=True)
