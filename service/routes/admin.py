"""``POST /v1/models/{name}/reload``: load a bundle from disk again and swap it in atomically (API key)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Header, Path

from service.deps import RepositoryDep, SettingsDep
from service.errors import Forbidden, Unauthorized
from service.schemas import ErrorResponse, ReloadResponse
from service.settings import Settings

router = APIRouter(prefix="/v1", tags=["admin"])


def check_api_key(settings: Settings, x_api_key: str | None, authorization: str | None) -> None:
    """Accept ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``.

    Raises:
        Unauthorized: no key was sent (401).
        Forbidden: wrong key, or SERVICE_API_KEY is unset so the admin API is disabled (403).
    """
    given = x_api_key
    if given is None and authorization and authorization.lower().startswith("bearer "):
        given = authorization[7:].strip()
    if settings.api_key is None:
        raise Forbidden("the admin API is disabled: set SERVICE_API_KEY to enable it")
    if not given:
        raise Unauthorized(
            "this route needs the API key in the X-API-Key header", headers={"WWW-Authenticate": "Bearer"}
        )
    if not hmac.compare_digest(given.encode(), settings.api_key.get_secret_value().encode()):
        raise Forbidden("wrong API key")


@router.post(
    "/models/{name}/reload",
    summary="Reload a model bundle from disk (admin)",
    description=(
        "Loads `<models_dir>/<name>`, checks it (schema, sha256, onnxruntime load, output shapes on a "
        "probe batch) and swaps it in atomically: requests in flight finish on the old version, new ones "
        "use the new one. A broken bundle is refused with 422 and the old version keeps serving. Also "
        "loads a bundle folder that was not loaded yet. Needs the API key (`X-API-Key` or "
        "`Authorization: Bearer`)."
    ),
    response_model=ReloadResponse,
    responses={
        401: {"model": ErrorResponse, "description": "no API key (unauthorized)"},
        403: {"model": ErrorResponse, "description": "wrong key, or admin API disabled (forbidden)"},
        404: {"model": ErrorResponse, "description": "no such bundle folder (model_not_found)"},
        422: {"model": ErrorResponse, "description": "the bundle fails a check (invalid_bundle)"},
    },
)
async def reload_model(
    name: Annotated[str, Path(description="bundle folder name", examples=["stn-linearized"])],
    repository: RepositoryDep,
    settings: SettingsDep,
    x_api_key: Annotated[str | None, Header(description="the admin API key")] = None,
    authorization: Annotated[str | None, Header(description="alternatively: Bearer <key>")] = None,
) -> ReloadResponse:
    check_api_key(settings, x_api_key, authorization)
    result = await repository.reload(name)
    bundle = result.model.bundle
    return ReloadResponse(
        model=name,
        status="reloaded" if result.previous_version is not None else "loaded",
        version=bundle.version,
        previous_version=result.previous_version,
        sha256=bundle.sha256,
        load_seconds=bundle.load_seconds,
    )
