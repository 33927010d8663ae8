"""The derived figures (ours vs the peer, ours vs the in-process ceiling) and the markdown tables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from benchmarks.load.phases import PhaseResult, SoakResult

if TYPE_CHECKING:  # the ceiling module imports onnxruntime
    from benchmarks.load.ceiling import CeilingPoint

MIB = 2**20


@dataclass(frozen=True)
class Comparison:
    """Ours against the peer in the same conditions (batching, loop, concurrency, offered rate).

    Attributes:
        throughput_ratio: ours / peer requests per second (> 1: ours serves more).
        p99_ratio: ours / peer p99 latency (< 1: ours answers faster).
    """

    batching: str
    crop: str
    loop: str
    concurrency: int
    offered_rate_per_s: float | None
    ours_per_s: float
    peer_per_s: float
    throughput_ratio: float | None
    ours_p99_ms: float | None
    peer_p99_ms: float | None
    p99_ratio: float | None


@dataclass(frozen=True)
class CeilingFraction:
    """Our closed-loop throughput against the in-process onnxruntime ceiling.

    Attributes:
        ceiling_batch: the batch size the service could at best form: 1 without batching, else
            min(concurrency, max batch size).
        fraction: ours / ceiling at that batch size.
        fraction_of_best: ours / the best ceiling over all measured batch sizes.
    """

    batching: str
    crop: str
    concurrency: int
    ours_per_s: float
    ceiling_batch: int
    ceiling_per_s: float
    fraction: float
    fraction_of_best: float


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def compare(results: list[PhaseResult]) -> list[Comparison]:
    """Pair every result of ours with the peer's in the same conditions."""
    peers = {
        (r.labels.batching, r.loop, r.concurrency, r.offered_rate_per_s): r
        for r in results
        if r.labels.target == "peer"
    }
    rows = []
    for ours in results:
        if ours.labels.target != "ours":
            continue
        peer = peers.get((ours.labels.batching, ours.loop, ours.concurrency, ours.offered_rate_per_s))
        if peer is None:
            continue
        rows.append(
            Comparison(
                batching=ours.labels.batching,
                crop=ours.labels.crop,
                loop=ours.loop,
                concurrency=ours.concurrency,
                offered_rate_per_s=ours.offered_rate_per_s,
                ours_per_s=ours.throughput.per_s,
                peer_per_s=peer.throughput.per_s,
                throughput_ratio=_ratio(ours.throughput.per_s, peer.throughput.per_s),
                ours_p99_ms=ours.latency.p99_ms,
                peer_p99_ms=peer.latency.p99_ms,
                p99_ratio=_ratio(ours.latency.p99_ms, peer.latency.p99_ms),
            )
        )
    return rows


def ceiling_fractions(
    results: list[PhaseResult], ceiling: list[CeilingPoint], max_batch_size: int
) -> list[CeilingFraction]:
    """Each closed-loop result of ours as a fraction of the in-process ceiling."""
    if not ceiling:
        return []
    by_batch = {p.batch_size: p.images_per_s for p in ceiling}
    best = max(by_batch.values())
    rows = []
    for r in results:
        if r.labels.target != "ours" or r.loop != "closed":
            continue
        want = 1 if r.labels.batching == "off" else min(r.concurrency, max_batch_size)
        batch = max((b for b in by_batch if b <= want), default=min(by_batch))
        rows.append(
            CeilingFraction(
                batching=r.labels.batching,
                crop=r.labels.crop,
                concurrency=r.concurrency,
                ours_per_s=r.throughput.per_s,
                ceiling_batch=batch,
                ceiling_per_s=by_batch[batch],
                fraction=r.throughput.per_s / by_batch[batch],
                fraction_of_best=r.throughput.per_s / best,
            )
        )
    return rows


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _errors(errors: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in errors.items()) or "0"


def phase_table(results: list[PhaseResult]) -> str:
    """Every phase, one row each."""
    lines = [
        "| server | batching | crop | loop | conns | offered/s | req/s | p50 ms | p95 ms | p99 ms "
        "| max ms | errors | unsent | send lag p99 ms | mean batch | server CPU % "
        "| other CPU on server cores % | client CPU % | RSS MiB before -> after |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        rss = f"{r.rss_before_bytes / MIB:.1f} -> {r.rss_after_bytes / MIB:.1f}"
        if r.tree_rss_after_bytes != r.rss_after_bytes:
            rss += f" (tree {r.tree_rss_before_bytes / MIB:.1f} -> {r.tree_rss_after_bytes / MIB:.1f})"
        lines.append(
            f"| {r.labels.target} | {r.labels.batching} | {r.labels.crop} | {r.loop} | {r.concurrency} "
            f"| {_f(r.offered_rate_per_s)} | {_f(r.throughput.per_s)} | {_f(r.latency.p50_ms, 2)} "
            f"| {_f(r.latency.p95_ms, 2)} | {_f(r.latency.p99_ms, 2)} | {_f(r.latency.max_ms, 2)} "
            f"| {_errors(r.errors)} | {r.unsent} | {_f(r.send_lag.p99_ms, 2)} | {_f(r.mean_batch_size, 2)} "
            f"| {_f(r.server_cpu_percent, 0)} | {_f(r.other_cpu_percent, 0)} "
            f"| {_f(r.client_cpu_percent, 0)} | {rss} |"
        )
    return "\n".join(lines)


def comparison_table(rows: list[Comparison]) -> str:
    """Ours and the peer side by side with the ratios."""
    lines = [
        "| batching | our crop | loop | conns | offered/s | ours req/s | peer req/s | ours / peer req/s "
        "| ours p99 ms | peer p99 ms | ours / peer p99 |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in rows:
        lines.append(
            f"| {c.batching} | {c.crop} | {c.loop} | {c.concurrency} | {_f(c.offered_rate_per_s)} "
            f"| {_f(c.ours_per_s)} | {_f(c.peer_per_s)} | {_f(c.throughput_ratio, 2)} "
            f"| {_f(c.ours_p99_ms, 2)} | {_f(c.peer_p99_ms, 2)} | {_f(c.p99_ratio, 2)} |"
        )
    return "\n".join(lines)


def ceiling_table(points: list[CeilingPoint]) -> str:
    """The in-process onnxruntime throughput."""
    lines = ["| batch | images/s | ms per batch |", "|---:|---:|---:|"]
    lines += [f"| {p.batch_size} | {p.images_per_s:,.0f} | {p.ms_per_batch:.2f} |" for p in points]
    return "\n".join(lines)


def fraction_table(rows: list[CeilingFraction]) -> str:
    """Our closed-loop throughput as a fraction of the ceiling."""
    lines = [
        "| batching | crop | conns | ours req/s | ceiling batch | ceiling images/s | fraction "
        "| of best ceiling |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.batching} | {r.crop} | {r.concurrency} | {r.ours_per_s:,.1f} | {r.ceiling_batch} "
        f"| {r.ceiling_per_s:,.0f} | {r.fraction:.1%} | {r.fraction_of_best:.1%} |"
        for r in rows
    ]
    return "\n".join(lines)


def soak_table(soak: SoakResult) -> str:
    """The soak's periodic readings and its summary."""
    lines = [
        "| t s | RSS MiB | CPU % | p50 ms | p99 ms | requests | errors |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in soak.samples:
        latency = s.latency
        lines.append(
            f"| {s.t_s:.0f} | {s.rss_bytes / MIB:.1f} | {_f(s.cpu_percent, 0)} "
            f"| {_f(latency.p50_ms if latency else None, 2)} | {_f(latency.p99_ms if latency else None, 2)} "
            f"| {latency.count if latency else '-'} | {_errors(s.errors) if latency else '-'} |"
        )
    p = soak.phase
    lines.append("")
    lines.append(
        f"RSS after warm-up {soak.rss_after_warmup_bytes / MIB:.1f} MiB, at the end "
        f"{soak.rss_end_bytes / MIB:.1f} MiB, peak {soak.rss_peak_bytes / MIB:.1f} MiB: growth "
        f"{soak.rss_growth_percent:+.2f}%. Requests {p.throughput.requests:,} ({p.throughput.per_s:,.1f}/s "
        f"answered 200 at {_f(p.offered_rate_per_s)}/s offered), errors {_errors(p.errors)}, "
        f"unsent {p.unsent}; "
        f"latency p50 {_f(p.latency.p50_ms, 2)} ms, p99 {_f(p.latency.p99_ms, 2)} ms, "
        f"max {_f(p.latency.max_ms, 2)} ms; server CPU {_f(p.server_cpu_percent, 0)}%, other processes on "
        f"its cores {_f(p.other_cpu_percent, 0)}%."
    )
    return "\n".join(lines)
