"""Load benchmark of the classification service, against a BentoML peer and the in-process ceiling.

Not a test. Starts the real service (``python -m service``) on loopback with the default bundle, warms it up,
and measures requests/s, p50/p95/p99 latency, errors by status, RSS and CPU for single-image
``POST /v1/classify`` requests (real GTSRB test photos, PNG) at several concurrencies, in a closed loop and in
an open loop on a fixed timetable (latency from the due time: no coordinated omission), with dynamic batching
on and off. The same load goes to a BentoML service of the same ONNX model (benchmarks/peer_bentoml/, run
from a throw-away virtualenv under .bench/), and the raw onnxruntime throughput of the model is measured
in-process as the ceiling. Server and load generator are pinned to different cores. docs/benchmarks.md,
"Service under load", explains the method.

    .venv/bin/python -m benchmarks.service_load --json .bench/service_load.json
    .venv/bin/python -m benchmarks.service_load --soak-s 600 --soak-rate 300 --json .bench/soak.json
    .venv/bin/python -m benchmarks.service_load --duration-s 3 --warmup-s 1 --concurrency 1 16   # smoke
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.load.machine import describe_machine, load_average
from benchmarks.load.matrix import MatrixResult, run_matrix, run_soak_mode
from benchmarks.load.peer_env import ensure_peer_venv
from benchmarks.load.pool import ClientPool
from benchmarks.load.report import (
    ceiling_fractions,
    ceiling_table,
    compare,
    comparison_table,
    fraction_table,
    phase_table,
    soak_table,
)
from benchmarks.load.settings import BenchConfig, parse_config

if TYPE_CHECKING:
    from benchmarks.load.ceiling import CeilingPoint

PEER_API = (
    "@bentoml.service(workers=1) class; @bentoml.api(batchable=True, max_batch_size, max_latency_ms) taking "
    "list[PIL.Image.Image] (batching on, route /classify); plain @bentoml.api taking one PIL.Image.Image "
    "(batching off, route /classify_single)"
)


def load_images(data_dir: Path, count: int) -> list[tuple[str, bytes]]:
    """(file name, PNG bytes) of the original-size GTSRB test images, sorted by name; ``count`` 0: all."""
    folder = data_dir / "test_originals"
    files = sorted(folder.glob("*.png"))
    if not files:
        raise SystemExit(f"no PNG in {folder}; set --data-dir or GTSRB_DATA_DIR")
    return [(f.name, f.read_bytes()) for f in (files[:count] if count > 0 else files)]


def pinning_line(config: BenchConfig) -> str:
    """What runs where, in words."""

    def text(cores: list[int] | None) -> str:
        return ",".join(map(str, cores)) if cores else "not pinned"

    return (
        f"pinning: servers on cores {text(config.server_cores)}, load generator ({config.client_procs} "
        f"process(es)) and this script on cores {text(config.client_cores)}; onnxruntime intra-op threads "
        f"{config.intra_op_threads}, inference workers {config.inference_workers}"
    )


def ceiling(config: BenchConfig) -> list[CeilingPoint]:
    """In-process onnxruntime images/s at batch 1 and at each concurrency capped at the max batch size.

    onnxruntime is imported here, not at module level: the load-generator processes are spawned and import
    this module again.
    """
    from benchmarks.load.ceiling import measure_ceiling

    sizes = sorted({1, *(min(c, config.max_batch_size) for c in config.concurrency)})
    return measure_ceiling(
        config.onnx_path, config.data_dir, sizes, config.intra_op_threads, config.ceiling_seconds,
        config.server_cores,
    )  # fmt: skip


def print_matrix(config: BenchConfig, out: MatrixResult, points: list[CeilingPoint]) -> dict[str, Any]:
    """Print the tables of a matrix run; returns the derived figures for the JSON report."""
    comparisons = compare(out.phases)
    fractions = ceiling_fractions(out.phases, points, config.max_batch_size)
    print("\n## Phases\n\n" + phase_table(out.phases))
    if comparisons:
        print("\n## Ours vs BentoML\n\n" + comparison_table(comparisons))
    if points:
        print("\n## In-process onnxruntime ceiling\n\n" + ceiling_table(points))
        print("\n## Ours as a fraction of the ceiling (closed loop)\n\n" + fraction_table(fractions))
    cores = len(config.client_cores or os.sched_getaffinity(0))
    busy = [r for r in out.phases if (r.client_cpu_percent or 0) > 90.0 * cores]
    if busy:
        print(
            f"\nnote: the load generator used over 90% of its {cores} core(s) in {len(busy)} phase(s); "
            "those phases may measure the client rather than the server"
        )
    return {
        "comparison": [asdict(c) for c in comparisons],
        "ceiling_fraction": [asdict(f) for f in fractions],
    }


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark (or the soak), print the tables and write --json."""
    config = parse_config(argv, description=__doc__ or "")
    machine = describe_machine()
    if config.client_cores:
        os.sched_setaffinity(0, config.client_cores)  # this process stays off the server's cores
    print(
        f"machine: {machine['cpu_model']}, {machine['cpus_online']} CPUs online, load average "
        f"{machine['load_average_at_start']}; python {machine['python']}, onnxruntime "
        f"{machine['versions']['onnxruntime']}",
        flush=True,
    )
    print(pinning_line(config), flush=True)
    images = load_images(config.data_dir, config.images)
    report: dict[str, Any] = {"config": asdict(config), "machine": machine, "pinning": pinning_line(config)}

    points = ceiling(config) if config.ceiling and config.soak_s is None else []
    report["ceiling"] = [asdict(p) for p in points]
    peer_env = None
    if config.peer and config.soak_s is None:
        peer_env = ensure_peer_venv(config.peer_venv, config.peer_requirements)
        report["peer"] = {"venv": str(peer_env.venv), "versions": peer_env.versions, "api": PEER_API}
        machine["versions"]["bentoml"] = peer_env.versions["bentoml"]
        print(f"peer: BentoML {peer_env.versions['bentoml']}, onnxruntime {peer_env.versions['onnxruntime']}")

    with ClientPool(config.client_procs, config.client_cores, images) as pool:
        if config.soak_s is not None:
            servers: list[dict[str, Any]] = []
            soak = run_soak_mode(config, pool, servers)
            report.update(servers=servers, soak=asdict(soak))
            print("\n## Soak\n\n" + soak_table(soak))
        else:
            out = run_matrix(config, pool, images, peer_env)
            report.update(
                servers=out.servers,
                phases=[asdict(r) for r in out.phases],
                open_loop_rates_per_s=out.open_rates,
                cross_check=out.cross_check,
            )
            report.update(print_matrix(config, out, points))
    report["machine"]["load_average_at_end"] = load_average()
    print(f"\nload average at the end: {report['machine']['load_average_at_end']}")
    if config.json_path is not None:
        config.json_path.parent.mkdir(parents=True, exist_ok=True)
        config.json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"wrote {config.json_path}")


if __name__ == "__main__":
    main()
