"""``GET /metrics`` (Prometheus text format) and ``GET /`` (the demo page)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.deps import MetricsDep

router = APIRouter(tags=["operations"])

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    description="Every service metric in the Prometheus text exposition format (docs/service.md lists them).",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {"example": "stn_images_classified_total{...} 42.0\n"}}}
    },
)
async def metrics(metrics: MetricsDep) -> Response:
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")
