"""The benchmark's plan: which server runs when, the phases against each, the open-loop rate, the soak."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from benchmarks.load import commands
from benchmarks.load.config import Endpoint, LoopKind, PhaseSpec
from benchmarks.load.http import multipart_request
from benchmarks.load.peer_env import PeerEnv
from benchmarks.load.phases import PhaseLabels, PhaseResult, SoakResult, run_phase, run_soak
from benchmarks.load.pool import ClientPool
from benchmarks.load.procfs import allowed_cpus
from benchmarks.load.servers import LOOPBACK, ServerCommand, ServerProcess, classify_once, free_port
from benchmarks.load.settings import BenchConfig

#: Images compared between ours and the peer after the warm-up (the same top-5 is expected).
CROSS_CHECK_IMAGES = 8


@dataclass(frozen=True)
class Target:
    """One thing to load: a running server, the endpoint to hit and the report labels."""

    labels: PhaseLabels
    server: ServerProcess
    endpoint: Endpoint


@dataclass
class MatrixResult:
    """All phases, the open-loop rates used (key ``"<batching> c=<connections>"``), the cross-check of the
    two servers' answers and the exact server commands."""

    phases: list[PhaseResult] = field(default_factory=list)
    open_rates: dict[str, float] = field(default_factory=dict)
    cross_check: dict[str, Any] | None = None
    servers: list[dict[str, Any]] = field(default_factory=list)


def phase_spec(
    config: BenchConfig, endpoint: Endpoint, loop: LoopKind, connections: int, rate: float | None
) -> PhaseSpec:
    """A phase with the configured warm-up, duration, request bound and timeout."""
    return PhaseSpec(
        endpoint=endpoint,
        loop=loop,
        connections=connections,
        rate_per_s=rate,
        warmup_s=config.warmup_s,
        duration_s=config.duration_s,
        max_requests=config.max_requests,
        timeout_s=config.timeout_s,
    )


def warm_up(config: BenchConfig, pool: ClientPool, endpoint: Endpoint) -> None:
    """Unmeasured closed-loop load right after a server start, at a moderate concurrency (a saturating
    warm-up would teach BentoML's batcher long waits before the first, lightly loaded phase)."""
    spec = phase_spec(config, endpoint, "closed", config.server_warmup_connections, None)
    pool.run(replace(spec, warmup_s=0.0, duration_s=config.server_warmup_s))


def _top5(body: Any, target: str) -> list[tuple[int, float]]:
    predictions = body["results"][0]["predictions"] if target == "ours" else body[0]["predictions"]
    return [(int(p["class_id"]), float(p["probability"])) for p in predictions[:5]]


def cross_check(images: list[tuple[str, bytes]], ours: Endpoint, peer: Endpoint) -> dict[str, Any]:
    """Send the first images to both servers: same top-5 classes? largest probability difference?"""
    same_top1 = same_top5 = 0
    max_diff = 0.0
    for name, data in images[:CROSS_CHECK_IMAGES]:
        answers = []
        for endpoint in (ours, peer):
            request = multipart_request(
                host=endpoint.host, port=endpoint.port, path=endpoint.path, field=endpoint.field,
                filename=name, data=data, content_type="image/png",
            )  # fmt: skip
            status, body = classify_once(endpoint.host, endpoint.port, request)
            if status != 200 or body is None:
                raise RuntimeError(f"{endpoint.name} answered {status} to {name} during the cross-check")
            answers.append(_top5(body, endpoint.name))
        a, b = answers
        same_top1 += a[0][0] == b[0][0]
        same_top5 += [c for c, _ in a] == [c for c, _ in b]
        max_diff = max(max_diff, *(abs(pa - pb) for (_, pa), (_, pb) in zip(a, b, strict=True)))
    return {
        "images": min(CROSS_CHECK_IMAGES, len(images)),
        "same_top1": same_top1,
        "same_top5_order": same_top5,
        "max_probability_difference": max_diff,
    }


def print_phase(r: PhaseResult) -> None:
    """One progress line per finished phase."""
    print(
        f"  {r.labels.target:4s} batching {r.labels.batching:3s} crop {r.labels.crop:7s} {r.loop:6s} "
        f"c={r.concurrency:<3d} {r.throughput.per_s:8.1f} req/s  p50 {r.latency.p50_ms or 0:7.2f}  "
        f"p99 {r.latency.p99_ms or 0:8.2f} ms  errors {sum(r.errors.values())}  unsent {r.unsent}  "
        f"server CPU {r.server_cpu_percent or 0:.0f}% (others on its cores {r.other_cpu_percent or 0:.0f}%)  "
        f"client CPU {r.client_cpu_percent or 0:.0f}%",
        flush=True,
    )


@contextlib.contextmanager
def _server(
    config: BenchConfig, command: ServerCommand, record: list[dict[str, Any]]
) -> Iterator[ServerProcess]:
    """Start a server, print and record its command, pid and actual cores; stop it on exit."""
    log = config.log_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{command.name}.log"
    print(f"starting {command.name}: {' '.join(command.argv)}  (log {log})", flush=True)
    with ServerProcess(command, config.server_cores, log) as server:
        cores = allowed_cpus(server.pid)
        print(f"  {command.name} ready: pid {server.pid}, allowed cores {cores}", flush=True)
        record.append(
            {"name": command.name, "argv": command.argv, "env": command.env, "log": str(log), "cores": cores}
        )
        yield server


def open_rate(config: BenchConfig, phases: list[PhaseResult], batching: str, connections: int) -> float:
    """--open-rate, else --open-rate-fraction x the lowest, over servers and crop modes, of their best
    closed-loop req/s (over all concurrencies, or at ``connections`` with --open-rate-basis concurrency)."""
    if config.open_rate is not None:
        return config.open_rate
    best: dict[tuple[str, str], float] = {}
    for r in phases:
        if r.loop != "closed" or r.labels.batching != batching:
            continue
        if config.open_rate_basis == "concurrency" and r.concurrency != connections:
            continue
        key = (r.labels.target, r.labels.crop)
        best[key] = max(best.get(key, 0.0), r.throughput.per_s)
    if not best or min(best.values()) <= 0:
        raise SystemExit("no closed-loop throughput to derive the open-loop rate from; pass --open-rate")
    return config.open_rate_fraction * min(best.values())


def _targets(
    config: BenchConfig, batching: str, ours: ServerProcess, peer: ServerProcess | None
) -> list[Target]:
    targets = [
        Target(
            PhaseLabels("ours", batching, crop),
            ours,
            Endpoint("ours", LOOPBACK, ours.command.port, commands.ours_path(crop)),
        )
        for crop in config.crops
    ]
    if peer is not None:
        endpoint = Endpoint("peer", LOOPBACK, peer.command.port, commands.peer_path(batching))
        targets.append(Target(PhaseLabels("peer", batching, "-"), peer, endpoint))
    return targets


def run_matrix(
    config: BenchConfig, pool: ClientPool, images: list[tuple[str, bytes]], peer_env: PeerEnv | None
) -> MatrixResult:
    """For each batching mode and loop: start both servers fresh, warm them up, then run every concurrency
    against each server in turn. Closed loops come first (they set the default open-loop rate).

    Fresh servers per (batching, loop) group keep history out of the comparison: BentoML's adaptive batcher
    learns how long to hold a lone request from the waits it saw, and after a saturated phase it keeps
    holding light-load requests that long.
    """
    out = MatrixResult()
    for batching in config.batching:
        for loop in ("closed", "open"):
            if loop not in config.loops:
                continue
            with contextlib.ExitStack() as stack:
                ours = stack.enter_context(
                    _server(config, commands.ours(config, batching, free_port()), out.servers)
                )
                peer = None
                if peer_env is not None:
                    command = commands.peer(config, peer_env, free_port())
                    peer = stack.enter_context(_server(config, command, out.servers))
                targets = _targets(config, batching, ours, peer)
                for target in targets:
                    warm_up(config, pool, target.endpoint)
                if peer is not None and out.cross_check is None:
                    out.cross_check = cross_check(images, targets[0].endpoint, targets[-1].endpoint)
                    print(f"cross-check ours vs peer: {out.cross_check}", flush=True)
                for connections in config.concurrency:
                    rate = None
                    if loop == "open":
                        rate = open_rate(config, out.phases, batching, connections)
                        out.open_rates[f"{batching} c={connections}"] = rate
                    for target in targets:
                        spec = phase_spec(config, target.endpoint, loop, connections, rate)
                        out.phases.append(run_phase(pool, target.server, spec, target.labels))
                        print_phase(out.phases[-1])
    return out


def run_soak_mode(config: BenchConfig, pool: ClientPool, servers: list[dict[str, Any]]) -> SoakResult:
    """Our service at a steady open-loop rate for --soak-s seconds, RSS read every --soak-sample-s."""
    if config.soak_s is None or config.soak_rate is None:
        raise ValueError("soak mode needs soak_s and soak_rate")
    command = commands.ours(config, config.soak_batching, free_port())
    with _server(config, command, servers) as ours:
        endpoint = Endpoint("ours", LOOPBACK, command.port, commands.ours_path(config.crops[0]))
        warm_up(config, pool, endpoint)
        spec = replace(
            phase_spec(config, endpoint, "open", config.soak_connections, config.soak_rate),
            duration_s=config.soak_s,
            max_requests=math.ceil(config.soak_rate * config.soak_s) + 1,
        )
        labels = PhaseLabels("ours", config.soak_batching, config.crops[0])
        print(f"soak: {config.soak_s:.0f} s at {config.soak_rate:.1f} requests/s", flush=True)
        return run_soak(pool, ours, spec, labels, config.soak_sample_s)
