"""FastAPI dependencies: settings, model repository, metrics, executors (as ``Annotated`` aliases).

Every dependency is an ``async def`` that reads ``app.state``: FastAPI runs a plain ``def`` dependency in a
worker thread, a thread hop per dependency per request that costs more than the lookup itself.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

from fastapi import Depends, Request

from service.errors import NotReady
from service.metrics import ServiceMetrics
from service.repository import ModelRepository
from service.settings import Settings


def repository_of(request: Request) -> ModelRepository:
    """The app's model repository (built by the lifespan); routes that skip FastAPI's injection call this.

    Raises:
        NotReady: the models are not loaded yet (503).
    """
    repository: ModelRepository | None = getattr(request.app.state, "repository", None)
    if repository is None:
        raise NotReady("the service is starting: models are not loaded yet")
    return repository


async def get_repository(request: Request) -> ModelRepository:
    """The app's model repository (built by the lifespan), as a dependency."""
    return repository_of(request)


async def get_app_settings(request: Request) -> Settings:
    """The app's settings (``create_app``'s, from the environment by default)."""
    settings: Settings = request.app.state.settings
    return settings


async def get_metrics(request: Request) -> ServiceMetrics:
    """The app's Prometheus metrics."""
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics


async def get_decode_executor(request: Request) -> ThreadPoolExecutor:
    """The thread pool that decodes uploads and renders crops."""
    executor: ThreadPoolExecutor = request.app.state.decode_executor
    return executor


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
RepositoryDep = Annotated[ModelRepository, Depends(get_repository)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
DecodeExecutorDep = Annotated[ThreadPoolExecutor, Depends(get_decode_executor)]
