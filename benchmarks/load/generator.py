"""The load generator: closed and open loops over keep-alive connections, in one process.

:func:`worker_main` is the body of each load-generator process (see :mod:`benchmarks.load.pool`); it imports
nothing heavy and uses uvloop when it is installed (it is, with ``uvicorn[standard]``).
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.load.config import STATUS_CLIENT_TIMEOUT, STATUS_CONNECTION_ERROR, WorkerJob
from benchmarks.load.http import Connection, ProtocolError, multipart_request

#: Pause after a failed connection, seconds, so a dead server does not turn the loop into a busy spin.
ERROR_BACKOFF_S = 0.01


@dataclass
class Samples:
    """What one worker recorded in the measured window (arrays are parallel, one entry per request).

    Attributes:
        due: monotonic seconds; open loop: the request's slot on the timetable; closed loop: when it was sent.
        lag: seconds from ``due`` to the actual send (timer and connection waits; 0 in the closed loop).
        latency: seconds from ``due`` to the end of the response (so open-loop latency includes ``lag``).
        status: HTTP status, or STATUS_CONNECTION_ERROR / STATUS_CLIENT_TIMEOUT.
        unsent: open loop: requests due in the window that were not sent before it ended (the backlog).
        cpu_s: CPU seconds this process used from the window's start to its last answer.
        wall_s: wall seconds of the same span.
    """

    due: npt.NDArray[np.float64]
    lag: npt.NDArray[np.float64]
    latency: npt.NDArray[np.float64]
    status: npt.NDArray[np.int32]
    unsent: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0


@dataclass
class _Recorder:
    due: list[float] = field(default_factory=list)
    lag: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    status: list[int] = field(default_factory=list)

    def add(self, due: float, sent: float, done: float, status: int) -> None:
        self.due.append(due)
        self.lag.append(sent - due)
        self.latency.append(done - due)
        self.status.append(status)

    def samples(self, unsent: int, cpu_s: float, wall_s: float) -> Samples:
        return Samples(
            due=np.asarray(self.due, dtype=np.float64),
            lag=np.asarray(self.lag, dtype=np.float64),
            latency=np.asarray(self.latency, dtype=np.float64),
            status=np.asarray(self.status, dtype=np.int32),
            unsent=unsent,
            cpu_s=cpu_s,
            wall_s=wall_s,
        )


async def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def _send(connection: Connection, request: bytes, timeout_s: float) -> int:
    """The response status, or STATUS_CONNECTION_ERROR / STATUS_CLIENT_TIMEOUT."""
    try:
        async with asyncio.timeout(timeout_s):
            status, _ = await connection.send(request)
        return status
    except TimeoutError:
        connection.close()
        return STATUS_CLIENT_TIMEOUT
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ProtocolError, ValueError):
        connection.close()
        await asyncio.sleep(ERROR_BACKOFF_S)
        return STATUS_CONNECTION_ERROR


class _Budget:
    """Shared counters of one worker's tasks: the next request (image) and the measured requests left."""

    def __init__(self, job: WorkerJob, requests: list[bytes]):
        self.requests = requests
        self.left = job.max_requests
        self._next = job.index

    def next_request(self, workers: int) -> bytes:
        request = self.requests[self._next % len(self.requests)]
        self._next += workers
        return request


async def closed_loop(job: WorkerJob, requests: list[bytes]) -> Samples:
    """``job.connections`` clients, each sending its next request as soon as the previous one is answered."""
    spec = job.spec
    recorder = _Recorder()
    budget = _Budget(job, requests)
    cpu_start: list[float] = []

    async def client() -> None:
        connection = Connection(spec.endpoint.host, spec.endpoint.port)
        try:
            while True:
                sent = time.monotonic()
                if sent >= job.t_end:
                    return
                measured = sent >= job.t_measure
                if measured:
                    if budget.left <= 0:
                        return
                    budget.left -= 1
                    if not cpu_start:
                        cpu_start.append(time.process_time())
                status = await _send(connection, budget.next_request(job.workers), spec.timeout_s)
                if measured:
                    recorder.add(sent, sent, time.monotonic(), status)
        finally:
            connection.close()

    await _sleep_until(job.t_start)
    await asyncio.gather(*(client() for _ in range(job.connections)))
    return _finish(job, recorder, cpu_start, unsent=0)


async def open_loop(job: WorkerJob, requests: list[bytes]) -> Samples:
    """Requests due on a fixed timetable (``rate_per_s`` over all workers; this worker takes every
    ``workers``-th slot), each sent on the first free connection; latency counts from the due time, so a slow
    answer that delays later requests is charged to them too (no coordinated omission).

    Nothing is sent after the window's end: requests due in the window but still waiting for a connection
    then are counted in ``Samples.unsent`` (the server did not keep up with the offered rate).
    """
    spec = job.spec
    if spec.rate_per_s is None or spec.rate_per_s <= 0:
        raise ValueError(f"the open loop needs a positive rate, got {spec.rate_per_s}")
    interval = 1.0 / spec.rate_per_s
    recorder = _Recorder()
    budget = _Budget(job, requests)
    cpu_start: list[float] = []
    slot = [0]  # this worker's next slot number

    def due_of(k: int) -> float:
        return job.t_start + (k * job.workers + job.index) * interval

    async def client() -> None:
        connection = Connection(spec.endpoint.host, spec.endpoint.port)
        try:
            while True:
                due = due_of(slot[0])
                if due >= job.t_end:
                    return
                measured = due >= job.t_measure
                if measured and budget.left <= 0:
                    return
                slot[0] += 1
                if measured:
                    budget.left -= 1
                await _sleep_until(due)
                sent = time.monotonic()
                if sent >= job.t_end:
                    return
                if measured and not cpu_start:
                    cpu_start.append(time.process_time())
                status = await _send(connection, budget.next_request(job.workers), spec.timeout_s)
                if measured:
                    recorder.add(due, sent, time.monotonic(), status)
        finally:
            connection.close()

    await _sleep_until(job.t_start)
    await asyncio.gather(*(client() for _ in range(job.connections)))
    due_in_window = _slots_between(job, interval, job.t_measure, job.t_end)
    unsent = max(0, min(due_in_window, job.max_requests) - len(recorder.due))
    return _finish(job, recorder, cpu_start, unsent=unsent)


def _slots_between(job: WorkerJob, interval: float, start: float, end: float) -> int:
    """How many of this worker's timetable slots fall in [start, end) (monotonic seconds)."""

    def first_at_or_after(t: float) -> int:
        return max(0, math.ceil(((t - job.t_start) / interval - job.index) / job.workers))

    return max(0, first_at_or_after(end) - first_at_or_after(start))


def _finish(job: WorkerJob, recorder: _Recorder, cpu_start: list[float], unsent: int) -> Samples:
    cpu_s = time.process_time() - cpu_start[0] if cpu_start else 0.0
    wall_s = max(0.0, time.monotonic() - job.t_measure)
    return recorder.samples(unsent=unsent, cpu_s=cpu_s, wall_s=wall_s)


def build_requests(job: WorkerJob, images: list[tuple[str, bytes]]) -> list[bytes]:
    """The prebuilt requests of a phase: one per image, for the phase's endpoint."""
    endpoint = job.spec.endpoint
    return [
        multipart_request(
            host=endpoint.host,
            port=endpoint.port,
            path=endpoint.path,
            field=endpoint.field,
            filename=name,
            data=data,
            content_type="image/png",
        )
        for name, data in images
    ]


def run_job(job: WorkerJob, images: list[tuple[str, bytes]]) -> Samples:
    """Run one worker's share of a phase on a fresh event loop (uvloop when available)."""
    requests = build_requests(job, images)
    loop_fn = closed_loop if job.spec.loop == "closed" else open_loop
    return _event_loop_runner()(loop_fn(job, requests))


def _event_loop_runner() -> Callable[[Coroutine[Any, Any, Samples]], Samples]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def worker_main(pipe: Pipe, cores: list[int] | None, images: list[tuple[str, bytes]]) -> None:
    """A load-generator process: pin to ``cores``, then run each :class:`WorkerJob` received on ``pipe`` and
    send back its :class:`Samples`, until it receives None."""
    if cores:
        os.sched_setaffinity(0, cores)
    pipe.send("ready")
    while True:
        job = pipe.recv()
        if job is None:
            return
        pipe.send(run_job(job, images))
