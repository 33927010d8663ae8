"""onnxruntime sessions and the dynamic batcher.

The batcher gathers single images submitted by concurrent requests for one model into one onnxruntime call of
up to ``max_batch_size`` images, waiting at most ``max_delay_ms`` for more after the first. With the adaptive
wait (the service's default) it waits only while some admitted request (a :class:`Reservation`) has yet to
queue its images: a lone request runs at once, and under load the batches fill while the previous one runs.
Its queue is bounded: a submission that does not fit raises :class:`~service.errors.Overloaded` at once (503 +
Retry-After). onnxruntime runs in a bounded thread-pool executor, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service.bundles import ModelCard, expected_shapes, shape_matches
from service.errors import InferenceError, NotReady, Overloaded
from service.settings import Settings

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]


def select_providers(preference: str, available: list[str]) -> list[str]:
    """onnxruntime execution providers for a setting: ``auto`` takes CUDA when available, then CPU.

    Raises:
        ValueError: ``cuda`` was asked for and onnxruntime does not offer CUDAExecutionProvider.
    """
    cuda = "CUDAExecutionProvider"
    if preference == "cpu":
        return ["CPUExecutionProvider"]
    if preference == "cuda" and cuda not in available:
        raise ValueError(f"SERVICE_EXECUTION_PROVIDER=cuda but onnxruntime offers only {available}")
    if cuda in available:
        return [cuda, "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def create_session(path: Path, settings: Settings) -> Any:
    """An ``onnxruntime.InferenceSession`` with explicit threading: ``intra_op_threads`` per call, one
    inter-op thread, sequential execution, and (by default) no spinning threads between calls."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.resolved_intra_op_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    spinning = "1" if settings.ort_allow_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
    providers = select_providers(settings.execution_provider, list(ort.get_available_providers()))
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


@dataclass(frozen=True)
class ImageOutputs:
    """The network's outputs for one image plus how it was batched.

    Attributes:
        logits: (C,) float32 class scores.
        warp: (3, 3) float32, network frame, canonical crop -> input (docs/model-bundle.md).
        crop: (3, S, S) float32 network crop, 0..255 RGB.
        batch_size: images in the onnxruntime call that computed it.
        queue_seconds: from submission to the start of that call.
        inference_seconds: duration of that call.
    """

    logits: FloatArray
    warp: FloatArray
    crop: FloatArray
    batch_size: int
    queue_seconds: float
    inference_seconds: float


def run_batch(session: Any, card: ModelCard, images: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """One onnxruntime call on a (N, 3, H, W) float32 batch; returns logits (N, C), warp (N, 3, 3) and crop
    (N, 3, S, S), checked against the card's shapes.

    Raises:
        InferenceError: onnxruntime failed or an output has the wrong shape.
    """
    names = [card.outputs.logits.name, card.outputs.warp.name, card.outputs.crop.name]
    try:
        logits, warp, crop = session.run(names, {card.input.name: images})
    except Exception as exc:  # onnxruntime's own error types
        raise InferenceError(f"onnxruntime failed on a batch of {len(images)}: {exc}") from exc
    expected = expected_shapes(card, len(images))
    arrays = [np.asarray(logits), np.asarray(warp), np.asarray(crop)]
    for name, array in zip(names, arrays, strict=True):
        if not shape_matches(array.shape, expected[name]):
            raise InferenceError(f"output {name!r} has shape {array.shape}, expected {expected[name]}")
    return arrays[0], arrays[1], arrays[2]


BatchRunner = Callable[[FloatArray], tuple[FloatArray, FloatArray, FloatArray]]
"""Runs one (N, 3, H, W) batch; the batcher calls it in the executor thread."""


@dataclass(eq=False)  # compared by identity: the queue removes a cancelled item by identity
class _Item:
    image: FloatArray
    future: asyncio.Future[ImageOutputs]
    enqueued: float
    queued: bool = True


class BatchObserver:
    """Hooks the batcher calls (metrics); the default does nothing."""

    def queue_depth(self, depth: int) -> None:
        """Images waiting, after every change."""

    def batch(self, size: int, inference_seconds: float, queue_seconds: list[float]) -> None:
        """One onnxruntime call finished: its size, duration and each image's time in the queue."""

    def dropped(self, count: int) -> None:
        """``count`` queued images left the queue unrun: their request ended (client gone, timed out)."""


class Reservation:
    """A request admitted to a batcher that will queue its images soon (after reading and decoding them).

    Obtained from :meth:`DynamicBatcher.reserve`; :meth:`submit` queues the images. While a reservation is
    open and has not submitted, a batcher with the adaptive wait holds a partial batch (up to ``max_delay``)
    for it.
    """

    def __init__(self, batcher: DynamicBatcher):
        self.batcher = batcher
        self.submitted = False

    def submit(self, images: list[FloatArray]) -> list[asyncio.Future[ImageOutputs]]:
        """:meth:`DynamicBatcher.submit`, ending this reservation's claim on the batch wait."""
        futures = self.batcher.submit(images)
        self._release()
        return futures

    def _release(self) -> None:
        if not self.submitted:
            self.submitted = True
            self.batcher._reserved -= 1


class DynamicBatcher:
    """Bounded queue + ``workers`` consumer tasks, each running one batch at a time in ``executor``.

    Use on one event loop: :meth:`start` inside it, :meth:`submit` from request handlers, :meth:`close` at
    shutdown or after a hot reload replaced this model (it drains what was already accepted).
    """

    def __init__(
        self,
        runner: BatchRunner,
        *,
        executor: Executor,
        max_batch_size: int,
        max_delay_s: float,
        queue_size: int,
        workers: int = 1,
        retry_after_s: int = 1,
        observer: BatchObserver | None = None,
        name: str = "model",
        adaptive_wait: bool = False,
    ):
        if max_batch_size < 1 or queue_size < 1 or workers < 1 or max_delay_s < 0:
            raise ValueError("max_batch_size, queue_size and workers must be >= 1 and max_delay_s >= 0")
        self.runner = runner
        self.name = name
        self._executor = executor
        self._max_batch_size = max_batch_size
        self._max_delay_s = max_delay_s
        self._queue_size = queue_size
        self._workers = workers
        self._retry_after_s = retry_after_s
        self._observer = observer or BatchObserver()
        self._queue: deque[_Item] = deque()
        self._wakeup: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._held_batches = 0
        self._closing = False
        self._adaptive_wait = adaptive_wait
        self._reserved = 0  # open reservations that have not submitted yet

    @property
    def depth(self) -> int:
        """Images accepted and not yet handed to onnxruntime."""
        return len(self._queue)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (new images are refused)."""
        return self._closing

    @property
    def busy(self) -> bool:
        """Whether any image is queued or being computed."""
        return bool(self._queue) or self._held_batches > 0

    def start(self) -> None:
        """Start the consumer tasks on the running event loop."""
        if self._tasks:
            return
        self._wakeup = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._consume(), name=f"batcher-{self.name}-{i}")
            for i in range(self._workers)
        ]

    def check_room(self, count: int = 1) -> None:
        """Check that ``count`` more images would be accepted now (requests call it before reading a body).

        Raises:
            Overloaded: the queue has room for fewer than ``count`` more images.
            NotReady: the batcher is closing or not started.
        """
        if self._closing or self._wakeup is None:
            raise NotReady(f"model {self.name!r} is being unloaded; retry", headers={"Retry-After": "1"})
        if len(self._queue) + count > self._queue_size:
            raise Overloaded(
                f"model {self.name!r} is overloaded: {len(self._queue)} images queued, "
                f"limit {self._queue_size}",
                headers={"Retry-After": str(self._retry_after_s)},
            )

    @contextlib.contextmanager
    def reserve(self) -> Iterator[Reservation]:
        """Admit a request that will submit images soon, for the duration of the block.

        With ``adaptive_wait``, a partial batch waits (up to ``max_delay_s``) only while some reservation has
        yet to submit; without, reservations change nothing and every partial batch waits ``max_delay_s``.

        Raises:
            Overloaded: the queue is full now (checked before the request's body is read).
            NotReady: the batcher is closing or not started.
        """
        self.check_room(1)
        reservation = Reservation(self)
        self._reserved += 1
        try:
            yield reservation
        finally:
            reservation._release()

    @property
    def reserved(self) -> int:
        """Open reservations that have not submitted their images yet."""
        return self._reserved

    def submit(self, images: list[FloatArray]) -> list[asyncio.Future[ImageOutputs]]:
        """Queue (3, H, W) float32 images; all are accepted or none (no await between check and append).

        Cancelling a returned future (the request ended: its client disconnected, or it timed out) removes its
        image from the queue at once, so it never runs and frees its place.

        Raises:
            Overloaded: the queue has room for fewer than ``len(images)`` more images.
            NotReady: the batcher is closing or not started.
        """
        self.check_room(len(images))
        wakeup = self._wakeup
        if wakeup is None:  # check_room raised already; this narrows the type
            raise RuntimeError("batcher not started")
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        futures: list[asyncio.Future[ImageOutputs]] = []
        for image in images:
            future: asyncio.Future[ImageOutputs] = loop.create_future()
            item = _Item(image=image, future=future, enqueued=now)
            future.add_done_callback(functools.partial(self._discard, item))
            self._queue.append(item)
            futures.append(future)
        self._observer.queue_depth(len(self._queue))
        wakeup.set()
        return futures

    def _discard(self, item: _Item, future: asyncio.Future[ImageOutputs]) -> None:
        """Done callback of a queued image's future: a cancelled image still in the queue leaves it."""
        if future.cancelled() and item.queued:
            item.queued = False
            self._queue.remove(item)
            self._observer.queue_depth(len(self._queue))
            self._observer.dropped(1)

    def _take(self, batch: list[_Item]) -> None:
        while self._queue and len(batch) < self._max_batch_size:
            item = self._queue.popleft()
            item.queued = False
            if not item.future.done():
                batch.append(item)
            elif item.future.cancelled():  # its request ended before the done callback ran
                self._observer.dropped(1)

    async def _gather(self, batch: list[_Item]) -> None:
        """Wait for a first image, then for up to max_delay_s more until ``batch`` is full (filled in place;
        the batch counts as held from its first image on, so :meth:`close` waits for it). With the adaptive
        wait, the batch stops waiting as soon as the queue is empty and no reservation is left to submit."""
        wakeup = self._wakeup
        if wakeup is None:
            raise RuntimeError("batcher not started")
        while not batch:
            while not self._queue:
                wakeup.clear()
                await wakeup.wait()
            self._take(batch)
        self._held_batches += 1
        deadline = time.perf_counter() + self._max_delay_s
        while len(batch) < self._max_batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            if not self._queue:
                if self._adaptive_wait and self._reserved == 0:
                    break  # nobody else is about to submit: waiting would only add latency
                wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), timeout=remaining)
            self._take(batch)
        self._observer.queue_depth(len(self._queue))

    async def _consume(self) -> None:
        while True:
            batch: list[_Item] = []
            try:
                await self._gather(batch)
                await self._run(batch)
            except asyncio.CancelledError:
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(NotReady(f"model {self.name!r} was unloaded mid-batch"))
                raise
            finally:
                if batch:
                    self._held_batches -= 1

    async def _run(self, batch: list[_Item]) -> None:
        """One onnxruntime call in the executor; resolve every caller's future with its row or the error."""
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        images = np.stack([item.image for item in batch]).astype(np.float32, copy=False)
        try:
            logits, warp, crop = await loop.run_in_executor(self._executor, self.runner, images)
        except Exception as exc:
            if isinstance(exc, InferenceError):
                error = exc
            else:
                log.exception("batch of %d failed on model %s", len(batch), self.name)
                error = InferenceError(f"inference failed: {exc}")
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        seconds = time.perf_counter() - start
        waits = [start - item.enqueued for item in batch]
        self._observer.batch(len(batch), seconds, waits)
        for i, item in enumerate(batch):
            if not item.future.done():
                item.future.set_result(
                    ImageOutputs(
                        logits=logits[i],
                        warp=warp[i],
                        crop=crop[i],
                        batch_size=len(batch),
                        queue_seconds=waits[i],
                        inference_seconds=seconds,
                    )
                )

    async def close(self, drain_timeout_s: float = 30.0) -> None:
        """Refuse new images, let accepted ones finish (up to ``drain_timeout_s``), then stop the consumers.

        Images still queued after the timeout fail with :class:`NotReady`.
        """
        self._closing = True
        deadline = time.perf_counter() + drain_timeout_s
        while self.busy and time.perf_counter() < deadline:
            await asyncio.sleep(0.005)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._queue:  # left over after the drain timeout
            while self._queue:
                item = self._queue.popleft()
                item.queued = False
                if not item.future.done():
                    item.future.set_exception(
                        NotReady(f"model {self.name!r} was unloaded before this image ran")
                    )
            self._observer.queue_depth(0)
