"""``create_app(settings)``: the FastAPI application, its lifespan (load bundles, drain at shutdown), the
error handlers and the routers.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import __version__
from service.errors import ServiceError
from service.fastpath import ClassifyFastPath
from service.logs import request_id_var
from service.metrics import REJECTION_REASONS, ServiceMetrics
from service.middleware import RequestMiddleware
from service.repository import ModelRepository
from service.routes import admin, apidocs, classify, models, ops, v2
from service.settings import Settings, get_settings

log = logging.getLogger(__name__)

DESCRIPTION = """
Classifies photos of traffic signs with spatial-transformer networks exported from `training/` as ONNX model
bundles (docs/model-bundle.md), and returns the sign, the model's confidence, and the sign as the transformer
aligned it (the transform in the uploaded image's pixels and a crop rendered from the original image).

* `/v1`: classification and model cards; errors are `{"error": {"code", "message", "request_id"}}`.
* `/v2`: the Open Inference Protocol (KServe v2) REST API; errors are `{"error": "<message>", "request_id"}`.
* `/metrics`: Prometheus.

Every error body carries the request's `request_id` (the `X-Request-ID` response header).
"""


def _error_body(request: Request, code: str, message: str) -> dict[str, Any]:
    """The error body of a route family: ``/v2`` the Open Inference Protocol's ``{"error": message}`` (plus
    the request id), every other path ``{"error": {"code", "message", "request_id"}}``."""
    if request.url.path.startswith("/v2"):
        return {"error": message, "request_id": request_id_var.get()}
    return {"error": {"code": code, "message": message, "request_id": request_id_var.get()}}


def _v2_status(request: Request, status: int) -> int:
    """The Open Inference Protocol answers 400 for every client error except 404."""
    if request.url.path.startswith("/v2") and status in (413, 415, 422):
        return 400 if status == 422 else status
    return status


def _without_opentelemetry() -> dict[str, Any]:
    """FastAPI's own OpenTelemetry hooks switched off (FastAPI >= 0.16x): the service does not use them, and
    FastAPI otherwise asks OpenTelemetry's global providers on every request (about 5% of a classify
    request's Python time in a profile; docs/benchmarks.md)."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def create_app(settings: Settings | None = None, registry: CollectorRegistry | None = None) -> FastAPI:
    """Build the service. Models load in the lifespan (use ``TestClient`` as a context manager).

    Args:
        settings: the settings; default: :func:`get_settings` (the environment). Routes read them from
            ``app.state.settings`` (``service.deps.SettingsDep``).
        registry: the Prometheus registry to register metrics on; default: a fresh one per app.
    """
    settings = settings or get_settings()
    registry = registry or CollectorRegistry()
    metrics = ServiceMetrics(registry, settings.metrics_prefix)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        inference_executor = ThreadPoolExecutor(settings.inference_workers, thread_name_prefix="onnxruntime")
        decode_executor = ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="decode")
        repository = ModelRepository(settings, metrics, inference_executor)
        app.state.decode_executor = decode_executor
        await repository.load_all()
        app.state.repository = repository
        log.info(
            "service ready: models %s, default %s, models_dir %s",
            repository.names(),
            repository.default_name,
            settings.models_dir,
        )
        try:
            yield
        finally:
            log.info("shutting down: draining batch queues")
            await repository.close()
            inference_executor.shutdown(wait=True)
            decode_executor.shutdown(wait=True)
            log.info("shutdown complete")

    app = FastAPI(
        **_without_opentelemetry(),
        title="STN traffic-sign classification service",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by service.routes.apidocs from local files
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics

    def count(code: str) -> None:
        metrics.rejections.labels(code if code in REJECTION_REASONS else "invalid_request").inc()

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        count(exc.code)
        status = _v2_status(request, exc.status_code)
        if status >= 500 and exc.status_code not in (503, 504):
            log.error("%s: %s", exc.code, exc.message)
        return JSONResponse(
            _error_body(request, exc.code, exc.message), status_code=status, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        count("invalid_request")
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', '')}" for err in exc.errors()
        )
        status = _v2_status(request, 422)
        return JSONResponse(_error_body(request, "invalid_request", problems), status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status_code, "http_error"
        )
        count(code)
        return JSONResponse(
            _error_body(request, code, str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    app.add_middleware(ClassifyFastPath, application=app, routes=classify.direct_routes())  # inside the next
    app.add_middleware(RequestMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes)
    for module in (classify, models, admin, v2, ops, apidocs):
        app.include_router(module.router)
    return app
