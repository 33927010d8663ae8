"""Typed descriptions of what the load generator does: the endpoint, one phase, one worker's share of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LoopKind = Literal["closed", "open"]

#: Status recorded for a request whose connection failed (refused, reset, malformed answer).
STATUS_CONNECTION_ERROR = 0
#: Status recorded for a request that got no answer within the client timeout.
STATUS_CLIENT_TIMEOUT = -1


@dataclass(frozen=True)
class Endpoint:
    """Where requests go: ``POST http://host:port/path`` with one multipart file part named ``field``.

    Attributes:
        name: label in the report (``ours``, ``peer``).
        path: request target including the query string, e.g. ``/v1/classify?crop=none``.
    """

    name: str
    host: str
    port: int
    path: str
    field: str = "file"


@dataclass(frozen=True)
class PhaseSpec:
    """One measured phase.

    Attributes:
        loop: ``closed``: ``connections`` clients, each sends its next request when the previous one is
            answered. ``open``: requests are due on a fixed timetable at ``rate_per_s`` (all workers together)
            and sent on the first free one of ``connections`` connections; latency counts from the due time.
        connections: concurrent connections (all workers together).
        rate_per_s: open loop only: requests per second, all workers together.
        warmup_s: seconds of load before the measured window (not recorded).
        duration_s: seconds of the measured window; no request is sent (closed) or due (open) after it.
        max_requests: most measured requests (all workers together); the window ends early when reached.
        timeout_s: client timeout per request, seconds.
    """

    endpoint: Endpoint
    loop: LoopKind
    connections: int
    rate_per_s: float | None
    warmup_s: float
    duration_s: float
    max_requests: int
    timeout_s: float


@dataclass(frozen=True)
class WorkerJob:
    """One load-generator process's share of a phase.

    Attributes:
        index: this worker, 0 .. workers - 1; in the open loop it takes the due times ``index, index +
            workers, ...`` of the shared timetable.
        connections: this worker's connections (at least 1).
        max_requests: this worker's share of the measured requests.
        t_start: ``time.monotonic()`` at which the warm-up starts (the same clock in every process on Linux).
    """

    spec: PhaseSpec
    index: int
    workers: int
    connections: int
    max_requests: int
    t_start: float

    @property
    def t_measure(self) -> float:
        """Start of the measured window (monotonic seconds)."""
        return self.t_start + self.spec.warmup_s

    @property
    def t_end(self) -> float:
        """End of the measured window (monotonic seconds)."""
        return self.t_measure + self.spec.duration_s
