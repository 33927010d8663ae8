"""The benchmark's command line and the typed configuration built from it."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from benchmarks.load.procfs import parse_cores

REPO = Path(__file__).resolve().parents[2]


def default_cores() -> tuple[str, str]:
    """(server cores, client cores) as text: the first half of the usable cores and the rest; no pinning
    ("") on a single core."""
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2:
        return "", ""
    half = len(usable) // 2
    return ",".join(map(str, usable[:half])), ",".join(map(str, usable[half:]))


@dataclass(frozen=True)
class BenchConfig:
    """Everything one run does; see ``--help`` for each field's meaning and unit."""

    models_dir: Path
    model: str
    server: str
    data_dir: Path
    images: int
    concurrency: list[int]
    loops: list[str]
    batching: list[str]
    crops: list[str]
    duration_s: float
    warmup_s: float
    server_warmup_s: float
    server_warmup_connections: int
    max_requests: int
    timeout_s: float
    open_rate: float | None
    open_rate_fraction: float
    open_rate_basis: str
    max_batch_size: int
    max_delay_ms: float
    queue_size: int
    intra_op_threads: int
    inference_workers: int
    server_cores: list[int] | None
    client_cores: list[int] | None
    client_procs: int
    peer: bool
    peer_venv: Path
    peer_requirements: list[str]
    peer_max_latency_ms: int
    ceiling: bool
    ceiling_seconds: float
    soak_s: float | None
    soak_rate: float | None
    soak_connections: int
    soak_sample_s: float
    soak_batching: str
    json_path: Path | None
    log_dir: Path

    @property
    def onnx_path(self) -> Path:
        """The served bundle's ONNX file."""
        return self.models_dir / self.model / "model.onnx"


def _default_model(models_dir: Path) -> str:
    marker = models_dir / "DEFAULT"
    if marker.is_file():
        return marker.read_text().strip()
    bundles = sorted(p.parent.name for p in models_dir.glob("*/model.onnx"))
    if not bundles:
        raise SystemExit(f"no model bundle in {models_dir}")
    return bundles[0]


def parse_config(argv: list[str] | None = None, description: str = "") -> BenchConfig:
    """Parse the command line into a :class:`BenchConfig`."""
    server_default, client_default = default_cores()
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models-dir", type=Path, default=REPO / "models")
    p.add_argument("--model", help="bundle to serve (default: models/DEFAULT)")
    p.add_argument(
        "--server",
        choices=["default", "granian", "uvicorn"],
        default="default",
        help="our HTTP server (python -m service --server); default: the service's default (SERVICE_SERVER)",
    )
    data_default = Path(os.environ.get("GTSRB_DATA_DIR", REPO.parent / "shared/data/gtsrb"))
    p.add_argument("--data-dir", type=Path, default=data_default, help="GTSRB folder with test_originals/")
    p.add_argument("--images", type=int, default=0, help="use the first N test_originals images (0: all)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64], help="connections per phase")
    p.add_argument("--loops", nargs="+", choices=["closed", "open"], default=["closed", "open"])
    p.add_argument("--batching", nargs="+", choices=["on", "off"], default=["on", "off"])
    p.add_argument(
        "--crop",
        nargs="+",
        choices=["default", "none"],
        default=["default"],
        help="our crop query option: default (no query: the service's default, a JPEG crop) and/or none",
    )
    p.add_argument("--duration-s", type=float, default=10.0, help="measured seconds per phase")
    p.add_argument("--warmup-s", type=float, default=2.0, help="unmeasured seconds of load before each phase")
    p.add_argument("--server-warmup-s", type=float, default=3.0, help="load after each server start, s")
    p.add_argument("--server-warmup-connections", type=int, default=4, help="connections of that load")
    p.add_argument("--max-requests", type=int, default=100_000, help="most measured requests per phase")
    p.add_argument("--timeout-s", type=float, default=30.0, help="client timeout per request, s")
    p.add_argument("--open-rate", type=float, help="open-loop requests/s (default: see the fraction)")
    p.add_argument(
        "--open-rate-fraction",
        type=float,
        default=0.7,
        help="default open-loop rate = this x the lowest, over the servers, of their closed-loop req/s",
    )
    p.add_argument(
        "--open-rate-basis",
        choices=["max", "concurrency"],
        default="max",
        help="max: the best closed-loop req/s over all concurrencies; concurrency: at the same concurrency",
    )
    p.add_argument("--max-batch-size", type=int, default=16, help="batching on: max images per call")
    p.add_argument("--max-delay-ms", type=float, default=2.0, help="batching on: SERVICE_MAX_DELAY_MS")
    p.add_argument("--queue-size", type=int, default=256, help="SERVICE_QUEUE_SIZE")
    p.add_argument("--intra-op-threads", type=int, default=0, help="0: one per server core")
    p.add_argument("--inference-workers", type=int, default=1, help="SERVICE_INFERENCE_WORKERS")
    p.add_argument("--server-cores", default=server_default, help='e.g. "0" or "0-1"; "" for no pinning')
    p.add_argument("--client-cores", default=client_default, help='e.g. "1"; "" for no pinning')
    p.add_argument("--client-procs", type=int, default=0, help="load-generator processes (0: one per core)")
    p.add_argument("--peer", action=argparse.BooleanOptionalAction, default=True, help="also load BentoML")
    p.add_argument("--peer-venv", type=Path, default=REPO / ".bench/peer-venv")
    p.add_argument("--peer-bentoml", default="bentoml>=1.4,<1.5", help="pip requirement for BentoML")
    p.add_argument(
        "--peer-max-latency-ms", type=int, default=30_000, help="BentoML max_latency_ms (our request timeout)"
    )
    p.add_argument("--ceiling", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--ceiling-seconds", type=float, default=3.0, help="timed seconds per ceiling batch size")
    p.add_argument("--soak-s", type=float, help="soak mode: one open-loop phase of this many seconds")
    p.add_argument("--soak-rate", type=float, help="soak mode: requests/s")
    p.add_argument("--soak-connections", type=int, default=64)
    p.add_argument("--soak-sample-s", type=float, default=30.0, help="soak: RSS reading interval, s")
    p.add_argument("--soak-batching", choices=["on", "off"], default="on")
    p.add_argument("--json", type=Path, dest="json_path", help="write every figure to this JSON file")
    p.add_argument("--log-dir", type=Path, default=REPO / ".bench/logs", help="server logs")
    a = p.parse_args(argv)

    if a.soak_s is not None and a.soak_rate is None:
        p.error("--soak-s needs --soak-rate")
    server_cores = parse_cores(a.server_cores)
    client_cores = parse_cores(a.client_cores)
    threads = a.intra_op_threads or len(server_cores or os.sched_getaffinity(0))
    client_procs = a.client_procs or len(client_cores or [0])
    models_dir = a.models_dir.resolve()
    return BenchConfig(
        models_dir=models_dir,
        model=a.model or _default_model(models_dir),
        server=a.server,
        data_dir=a.data_dir,
        images=a.images,
        concurrency=a.concurrency,
        loops=a.loops,
        batching=a.batching,
        crops=a.crop,
        duration_s=a.duration_s,
        warmup_s=a.warmup_s,
        server_warmup_s=a.server_warmup_s,
        server_warmup_connections=a.server_warmup_connections,
        max_requests=a.max_requests,
        timeout_s=a.timeout_s,
        open_rate=a.open_rate,
        open_rate_fraction=a.open_rate_fraction,
        open_rate_basis=a.open_rate_basis,
        max_batch_size=a.max_batch_size,
        max_delay_ms=a.max_delay_ms,
        queue_size=a.queue_size,
        intra_op_threads=threads,
        inference_workers=a.inference_workers,
        server_cores=server_cores,
        client_cores=client_cores,
        client_procs=client_procs,
        peer=a.peer,
        peer_venv=a.peer_venv,
        peer_requirements=[
            a.peer_bentoml,
            f"onnxruntime=={metadata.version('onnxruntime')}",  # the same as ours
            f"pillow=={metadata.version('pillow')}",  # the same resize
            "numpy",
        ],
        peer_max_latency_ms=a.peer_max_latency_ms,
        ceiling=a.ceiling,
        ceiling_seconds=a.ceiling_seconds,
        soak_s=a.soak_s,
        soak_rate=a.soak_rate,
        soak_connections=a.soak_connections,
        soak_sample_s=a.soak_sample_s,
        soak_batching=a.soak_batching,
        json_path=a.json_path,
        log_dir=a.log_dir,
    )
