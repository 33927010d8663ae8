"""The set of loaded models and its atomic hot reload.

Each loaded model version owns a :class:`~service.inference.DynamicBatcher`. A reload loads and checks the new
bundle off the event loop, starts its batcher, then swaps the dictionary entry in one step: requests that
already hold the old :class:`LoadedModel` finish on it (its batcher drains in the background, then stops),
new requests get the new one. A bundle that fails any check is refused and the old version keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.bundles import Bundle, ModelCard, check_name, discover, load_bundle, resolve_default
from service.errors import BundleError, ModelNotFound, NotReady, Overloaded
from service.inference import DynamicBatcher, Reservation, create_session, run_batch
from service.metrics import ServiceMetrics
from service.settings import Settings

log = logging.getLogger(__name__)


class RequestLimiter:
    """Admission of classify and infer requests: at most ``limit`` in progress at once, across all models.

    A request in progress holds its body, its decoded images and their network inputs, so this bounds the
    memory that concurrent clients can pin, whatever their number.
    """

    def __init__(self, limit: int, retry_after_s: int = 1):
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.in_progress = 0

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Count a request in progress for the duration of the block.

        Raises:
            Overloaded: ``limit`` requests are already in progress (503 + Retry-After).
        """
        if self.in_progress >= self.limit:
            raise Overloaded(
                f"the service is overloaded: {self.in_progress} requests in progress, limit {self.limit}",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        self.in_progress += 1
        try:
            yield
        finally:
            self.in_progress -= 1


@dataclass
class LoadedModel:
    """One served model version: the validated bundle, its batcher, the service's request limiter, and how
    many requests are using this version."""

    bundle: Bundle
    batcher: DynamicBatcher
    info: dict[str, str]
    limiter: RequestLimiter
    active_requests: int = 0

    @contextlib.contextmanager
    def use(self) -> Iterator[Reservation]:
        """Admit a request and hold this version for its duration: a hot reload retires it only once no
        request holds it, so requests in flight finish on the version they started with. Enter it right after
        :meth:`ModelRepository.get`, with no ``await`` in between, and before reading the request body: a
        refused request's body is never read nor decoded.

        Yields:
            The request's :class:`Reservation` on this version's batcher: submit the images through it, so
            that the batcher's adaptive wait knows when no other request is about to submit.

        Raises:
            Overloaded: this version's queue is full, or ``SERVICE_MAX_CONCURRENT_REQUESTS`` requests are in
                progress (503 + Retry-After).
            NotReady: this version's batcher is closed (shutting down).
        """
        with self.batcher.reserve() as reservation, self.limiter.admit():
            self.active_requests += 1
            try:
                yield reservation
            finally:
                self.active_requests -= 1

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def card(self) -> ModelCard:
        return self.bundle.card


@dataclass(frozen=True)
class ReloadResult:
    """What a reload did: the new model and the version it replaced (None when newly loaded)."""

    model: LoadedModel
    previous_version: str | None


class ModelRepository:
    """Loaded models by name, the default model's name, and the hot reload.

    Args:
        settings: service settings (models_dir, batching, threads).
        metrics: where load, batch and queue metrics go.
        executor: the bounded executor every batcher runs onnxruntime in.
        session_factory: builds an onnxruntime session from a path (default: :func:`create_session`).
    """

    def __init__(
        self,
        settings: Settings,
        metrics: ServiceMetrics,
        executor: Executor,
        session_factory: Callable[[Path], Any] | None = None,
    ):
        self.settings = settings
        self.metrics = metrics
        self.executor = executor
        self.session_factory = session_factory or functools.partial(_session_for, settings=settings)
        self.models_dir = Path(settings.models_dir)
        self.default_name: str | None = None
        self.load_errors: dict[str, str] = {}
        self._models: dict[str, LoadedModel] = {}
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()
        self.limiter = RequestLimiter(settings.max_concurrent_requests, settings.retry_after_s)
        self.closed = False

    def names(self) -> list[str]:
        """Names of the loaded models, sorted."""
        return sorted(self._models)

    def models(self) -> list[LoadedModel]:
        return [self._models[n] for n in self.names()]

    @property
    def ready(self) -> bool:
        """At least one model is loaded, the default one is, and the service is not shutting down."""
        return not self.closed and bool(self._models) and self.default_name in self._models

    def get(self, name: str | None = None) -> LoadedModel:
        """The model called ``name``, or the default model for None.

        Raises:
            ModelNotFound: no loaded model has that name.
            NotReady: no default model is loaded (name None).
        """
        if name is None:
            if self.default_name is None or self.default_name not in self._models:
                raise NotReady(
                    f"no default model is loaded (default: {self.default_name!r}, loaded: {self.names()})",
                    headers={"Retry-After": str(self.settings.retry_after_s)},
                )
            return self._models[self.default_name]
        model = self._models.get(name)
        if model is None:
            raise ModelNotFound(f"model {name!r} not found; loaded models: {self.names()}")
        return model

    async def load_all(self) -> None:
        """Load every bundle in ``models_dir`` (a broken one is logged and skipped) and pick the default."""
        names = discover(self.models_dir)
        if not names:
            log.error("no model bundle found in %s", self.models_dir)
        for name in names:
            try:
                await self.reload(name)
            except BundleError as exc:
                self.load_errors[name] = exc.message
                log.error("model %s not loaded: %s", name, exc.message)
        self.default_name = resolve_default(self.models_dir, self.settings.default_model, self.names())
        if self.default_name not in self._models:
            log.error("default model %r is not loaded (loaded: %s)", self.default_name, self.names())
        for model in self._models.values():  # the default flag is an info label: refresh it
            self._register_metrics(model, previous=None)

    async def reload(self, name: str) -> ReloadResult:
        """Load ``models_dir/name``, check it, and swap it in atomically; the old version drains.

        Raises:
            ModelNotFound: there is no such bundle folder.
            BundleError: the bundle fails a check; the served version (if any) is unchanged.
        """
        check_name(name)
        folder = self.models_dir / name
        if not folder.is_dir():
            raise ModelNotFound(f"no bundle folder {name!r} in {self.models_dir}")
        async with self._lock:
            try:
                bundle = await asyncio.to_thread(load_bundle, folder, self.session_factory)
            except BundleError:
                self.metrics.model_reloads.labels(name, "failure").inc()
                raise
            batcher = DynamicBatcher(
                functools.partial(run_batch, bundle.session, bundle.card),
                executor=self.executor,
                max_batch_size=self.settings.max_batch_size,
                max_delay_s=self.settings.max_delay_ms / 1000.0,
                queue_size=self.settings.queue_size,
                workers=self.settings.inference_workers,
                retry_after_s=self.settings.retry_after_s,
                observer=self.metrics.observer(name, bundle.version),
                name=name,
                adaptive_wait=self.settings.batch_wait == "adaptive",
            )
            batcher.start()
            model = LoadedModel(bundle=bundle, batcher=batcher, info=self._info(bundle), limiter=self.limiter)
            previous = self._models.get(name)
            self._models[name] = model  # the atomic swap: one dictionary assignment on the event loop
            self.metrics.model_reloads.labels(name, "success").inc()
            self._register_metrics(model, previous)
            if previous is not None:
                task = asyncio.create_task(self._retire(previous, model), name=f"retire-{name}")
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
            log.info(
                "model %s version %s loaded in %.3f s (sha256 %s, providers %s)%s",
                name,
                bundle.version,
                bundle.load_seconds,
                bundle.sha256[:12],
                bundle.providers,
                f", replacing version {previous.version}" if previous else "",
            )
            return ReloadResult(model=model, previous_version=previous.version if previous else None)

    def _info(self, bundle: Bundle) -> dict[str, str]:
        sampler = bundle.card.sampler
        return {
            "sha256": bundle.sha256,
            "warp_type": bundle.card.warp_type or "",
            "sampler": (sampler.inference or sampler.train or "") if sampler else "",
            "default": "true" if bundle.name == self.default_name else "false",
        }

    def _register_metrics(self, model: LoadedModel, previous: LoadedModel | None) -> None:
        new_info = self._info(model.bundle)
        if new_info != model.info:
            self.metrics.model_replaced(model.name, model.version, model.info, model.version, new_info)
            model.info = new_info
        self.metrics.model_loaded(
            model.name, model.version, len(model.card.classes), model.bundle.load_seconds, model.info
        )

    async def _retire(self, old: LoadedModel, new: LoadedModel) -> None:
        """Wait until no request holds ``old`` (at most the request timeout), then drain and stop it."""
        deadline = time.monotonic() + self.settings.request_timeout_s
        while old.active_requests > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await old.batcher.close(drain_timeout_s=self.settings.request_timeout_s)
        self.metrics.model_replaced(old.name, old.version, old.info, new.version, new.info)
        log.info("model %s version %s drained and unloaded", old.name, old.version)

    async def close(self) -> None:
        """Shutdown: refuse new work, drain every batcher, wait for retiring versions."""
        self.closed = True
        await asyncio.gather(
            *(
                m.batcher.close(drain_timeout_s=self.settings.shutdown_timeout_s)
                for m in self._models.values()
            )
        )
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)


def _session_for(path: Path, settings: Settings) -> Any:
    return create_session(path, settings)
