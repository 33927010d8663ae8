"""Run one phase against one server and reduce it to a :class:`PhaseResult`; the soak run."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from benchmarks.load.config import PhaseSpec
from benchmarks.load.pool import ClientPool
from benchmarks.load.procfs import TreeStats, busy_seconds
from benchmarks.load.servers import ServerProcess
from benchmarks.load.stats import (
    Percentiles,
    Throughput,
    cpu_percent,
    error_counts,
    mean_batch,
    other_cpu_percent,
    throughput,
)


@dataclass(frozen=True)
class PhaseLabels:
    """What a phase is, for the report: the server, its batching, our ``crop`` query option (``-`` for the
    peer, which renders no crop)."""

    target: str
    batching: str
    crop: str


@dataclass(frozen=True)
class PhaseResult:
    """Every figure of one phase.

    Attributes:
        offered_rate_per_s: open loop: the timetable's requests per second; closed loop: None.
        latency: 200 answers only, from the due time (open loop) or the send time (closed loop).
        send_lag: how late requests left the client after their due time (open loop; timer granularity and
            waiting for a free connection).
        errors: non-200 outcomes by status code or client-side failure.
        unsent: open loop: requests due in the window that never left the client (server too slow).
        rss_before_bytes / rss_after_bytes: VmRSS of the server's root process before the phase's warm-up and
            after its last answer; ``tree_*``: summed over the server's process tree (BentoML forks a worker).
        server_cpu_percent / client_cpu_percent: over the measured window, 100 = one core busy.
        other_cpu_percent: over the measured window, CPU used on the server's cores by other processes
            (100 = one core): contention from the rest of the machine; near 0 on an idle, pinned machine.
        mean_batch_size: from the server's own batch-size histogram on /metrics.
    """

    labels: PhaseLabels
    loop: str
    concurrency: int
    offered_rate_per_s: float | None
    throughput: Throughput
    latency: Percentiles
    send_lag: Percentiles
    errors: dict[str, int]
    unsent: int
    rss_before_bytes: int
    rss_after_bytes: int
    tree_rss_before_bytes: int
    tree_rss_after_bytes: int
    server_cpu_percent: float | None
    other_cpu_percent: float | None
    client_cpu_percent: float | None
    mean_batch_size: float | None


@dataclass
class _WindowStart:
    stats: TreeStats | None = None
    time: float = 0.0
    batches: tuple[float, float] | None = None
    busy_s: float = 0.0


def run_phase(pool: ClientPool, server: ServerProcess, spec: PhaseSpec, labels: PhaseLabels) -> PhaseResult:
    """Run ``spec`` against ``server``, reading its RSS and CPU before, at the window's start and after."""
    before = server.stats()
    busy_before = busy_seconds(server.cores)
    start = _WindowStart()

    def at_window_start(now: float) -> None:
        if start.stats is None:
            start.stats, start.time = server.stats(), now
            start.busy_s = busy_seconds(server.cores)
            start.batches = server.batch_histogram()

    run = pool.run(spec, on_tick=at_window_start, tick_s=spec.warmup_s + spec.duration_s + 60.0)
    end_time = time.monotonic()
    after = server.stats()
    busy_after = busy_seconds(server.cores)
    batches_after = server.batch_histogram()
    samples = run.samples
    ok = samples.status == 200
    window_start = start.stats or before
    busy_start = start.busy_s if start.stats is not None else busy_before
    window_s = end_time - (start.time or run.t_measure)
    return PhaseResult(
        labels=labels,
        loop=spec.loop,
        concurrency=spec.connections,
        offered_rate_per_s=spec.rate_per_s,
        throughput=throughput(samples, run.t_measure),
        latency=Percentiles.of(samples.latency[ok]),
        send_lag=Percentiles.of(samples.lag) if spec.loop == "open" else Percentiles.of(np.empty(0)),
        errors=error_counts(samples.status),
        unsent=samples.unsent,
        rss_before_bytes=before.rss_bytes,
        rss_after_bytes=after.rss_bytes,
        tree_rss_before_bytes=before.tree_rss_bytes,
        tree_rss_after_bytes=after.tree_rss_bytes,
        server_cpu_percent=cpu_percent(window_start, after, window_s),
        other_cpu_percent=other_cpu_percent(window_start, after, busy_start, busy_after, window_s),
        client_cpu_percent=100.0 * samples.cpu_s / samples.wall_s if samples.wall_s > 0 else None,
        mean_batch_size=mean_batch(start.batches, batches_after),
    )


@dataclass(frozen=True)
class SoakSample:
    """One reading during the soak: seconds since the soak's measured start, server RSS, CPU since the last
    reading (100 = one core), and the latency and errors of requests due since the last reading."""

    t_s: float
    rss_bytes: int
    tree_rss_bytes: int
    cpu_percent: float | None
    latency: Percentiles | None = None
    errors: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SoakResult:
    """The soak: the whole-run phase figures, the periodic readings and the RSS growth.

    Attributes:
        rss_after_warmup_bytes: VmRSS at the start of the measured soak (after the warm-up).
        rss_end_bytes: VmRSS after the last answer.
        rss_growth_percent: (end - after warm-up) / after warm-up, in percent.
        rss_peak_bytes: the largest VmRSS reading.
    """

    phase: PhaseResult
    samples: list[SoakSample]
    rss_after_warmup_bytes: int
    rss_end_bytes: int
    rss_peak_bytes: int
    rss_growth_percent: float


def run_soak(
    pool: ClientPool, server: ServerProcess, spec: PhaseSpec, labels: PhaseLabels, sample_s: float
) -> SoakResult:
    """An open-loop phase of ``spec.duration_s`` seconds, reading the server's RSS and CPU every ``sample_s``
    seconds (the first reading at the end of the warm-up)."""
    readings: list[tuple[float, TreeStats]] = []
    batches: list[tuple[float, float] | None] = []
    busy: list[float] = []

    def tick(now: float) -> None:
        if not readings:
            batches.append(server.batch_histogram())
            busy.append(busy_seconds(server.cores))
        readings.append((now, server.stats()))
        last = readings[-1][1]
        print(
            f"  soak t={now - readings[0][0]:7.1f} s  RSS {last.rss_bytes / 2**20:8.1f} MiB",
            flush=True,
        )

    before = server.stats()
    run = pool.run(spec, on_tick=tick, tick_s=sample_s)
    end = time.monotonic()
    final = server.stats()
    busy.append(busy_seconds(server.cores))
    batches.append(server.batch_histogram())
    if len(readings) > 1 and end - readings[-1][0] < sample_s / 4:
        readings.pop()  # a tick just before the end: the final reading replaces it
    readings.append((end, final))
    t0 = readings[0][0] if readings else run.t_measure
    samples = run.samples
    ok = samples.status == 200
    soak_samples: list[SoakSample] = []
    previous: tuple[float, TreeStats] | None = None
    for now, stats in readings:
        window: SoakSample
        if previous is None:
            window = SoakSample(
                t_s=now - t0, rss_bytes=stats.rss_bytes, tree_rss_bytes=stats.tree_rss_bytes, cpu_percent=None
            )
        else:
            window_start = run.t_measure if len(soak_samples) == 1 else previous[0]
            in_window = (samples.due >= window_start) & (samples.due < now)
            window = SoakSample(
                t_s=now - t0,
                rss_bytes=stats.rss_bytes,
                tree_rss_bytes=stats.tree_rss_bytes,
                cpu_percent=cpu_percent(previous[1], stats, now - previous[0]),
                latency=Percentiles.of(samples.latency[in_window & ok]),
                errors=error_counts(samples.status[in_window]),
            )
        soak_samples.append(window)
        previous = (now, stats)
    first = readings[0][1]
    phase = PhaseResult(
        labels=labels,
        loop=spec.loop,
        concurrency=spec.connections,
        offered_rate_per_s=spec.rate_per_s,
        throughput=throughput(samples, run.t_measure),
        latency=Percentiles.of(samples.latency[ok]),
        send_lag=Percentiles.of(samples.lag),
        errors=error_counts(samples.status),
        unsent=samples.unsent,
        rss_before_bytes=before.rss_bytes,
        rss_after_bytes=final.rss_bytes,
        tree_rss_before_bytes=before.tree_rss_bytes,
        tree_rss_after_bytes=final.tree_rss_bytes,
        server_cpu_percent=cpu_percent(first, final, end - t0),
        other_cpu_percent=other_cpu_percent(first, final, busy[0], busy[-1], end - t0),
        client_cpu_percent=100.0 * samples.cpu_s / samples.wall_s if samples.wall_s > 0 else None,
        mean_batch_size=mean_batch(batches[0], batches[-1]) if len(batches) == 2 else None,
    )
    return SoakResult(
        phase=phase,
        samples=soak_samples,
        rss_after_warmup_bytes=first.rss_bytes,
        rss_end_bytes=final.rss_bytes,
        rss_peak_bytes=max(stats.rss_bytes for _, stats in readings),
        rss_growth_percent=100.0 * (final.rss_bytes - first.rss_bytes) / max(1, first.rss_bytes),
    )
