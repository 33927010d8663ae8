"""Turn a phase's raw samples and server readings into the figures of the report."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from benchmarks.load.config import STATUS_CLIENT_TIMEOUT, STATUS_CONNECTION_ERROR
from benchmarks.load.generator import Samples
from benchmarks.load.procfs import TreeStats

_STATUS_NAMES = {STATUS_CONNECTION_ERROR: "connection_error", STATUS_CLIENT_TIMEOUT: "client_timeout"}


@dataclass(frozen=True)
class Percentiles:
    """Milliseconds: median, 95th, 99th percentile, maximum and mean (None without samples)."""

    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    mean_ms: float | None
    count: int

    @staticmethod
    def of(seconds: npt.NDArray[np.float64]) -> Percentiles:
        """Percentiles (linear interpolation) of durations given in seconds."""
        if seconds.size == 0:
            return Percentiles(None, None, None, None, None, 0)
        p50, p95, p99 = np.percentile(seconds, [50, 95, 99]) * 1000.0
        return Percentiles(
            p50_ms=float(p50),
            p95_ms=float(p95),
            p99_ms=float(p99),
            max_ms=float(seconds.max() * 1000.0),
            mean_ms=float(seconds.mean() * 1000.0),
            count=int(seconds.size),
        )


@dataclass(frozen=True)
class Throughput:
    """Answered requests of the measured window.

    Attributes:
        requests: requests sent in the window and finished (any status).
        ok: those answered 200.
        per_s: ``ok`` / seconds from the window's start to the last answer.
        span_s: that span, seconds.
    """

    requests: int
    ok: int
    per_s: float
    span_s: float


def throughput(samples: Samples, t_measure: float) -> Throughput:
    """200 answers per second over the measured window (from its start to its last answer)."""
    ok_mask = samples.status == 200
    done = samples.due + samples.latency
    span = float(done.max() - t_measure) if done.size else 0.0
    ok = int(ok_mask.sum())
    return Throughput(
        requests=int(samples.status.size), ok=ok, per_s=ok / span if span > 0 else 0.0, span_s=span
    )


def error_counts(status: npt.NDArray[np.int32]) -> dict[str, int]:
    """Every non-200 outcome by HTTP status (``"503"``) or client-side failure (``"client_timeout"``)."""
    counts = Counter(int(s) for s in status[status != 200])
    return {_STATUS_NAMES.get(code, str(code)): n for code, n in sorted(counts.items())}


def cpu_percent(before: TreeStats, after: TreeStats, wall_s: float) -> float | None:
    """CPU used between two readings, in percent of one core (200 = two cores busy)."""
    if wall_s <= 0:
        return None
    return 100.0 * (after.cpu_s - before.cpu_s) / wall_s


def other_cpu_percent(
    server_before: TreeStats, server_after: TreeStats, busy_before: float, busy_after: float, wall_s: float
) -> float | None:
    """CPU that processes other than the server used on the server's cores between two readings, in percent
    of one core: contention from anything else on the machine (0 on an idle machine with pinning)."""
    if wall_s <= 0:
        return None
    other = (busy_after - busy_before) - (server_after.cpu_s - server_before.cpu_s)
    return max(0.0, 100.0 * other / wall_s)


def mean_batch(before: tuple[float, float] | None, after: tuple[float, float] | None) -> float | None:
    """Mean batch size between two (sum, count) readings of a batch-size histogram."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])
