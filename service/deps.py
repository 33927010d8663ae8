"""FastAPI dependencies: settings, model repository, metrics, executors (as ``Annotated`` aliases)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

from fastapi import Depends, Request

from service.errors import NotReady
from service.metrics import ServiceMetrics
from service.repository import ModelRepository
from service.settings import Settings, get_settings


def get_repository(request: Request) -> ModelRepository:
    """The app's model repository (built by the lifespan)."""
    repository: ModelRepository | None = getattr(request.app.state, "repository", None)
    if repository is None:
        raise NotReady("the service is starting: models are not loaded yet")
    return repository


def get_metrics(request: Request) -> ServiceMetrics:
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics


def get_decode_executor(request: Request) -> ThreadPoolExecutor:
    executor: ThreadPoolExecutor = request.app.state.decode_executor
    return executor


SettingsDep = Annotated[Settings, Depends(get_settings)]
RepositoryDep = Annotated[ModelRepository, Depends(get_repository)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
DecodeExecutorDep = Annotated[ThreadPoolExecutor, Depends(get_decode_executor)]
