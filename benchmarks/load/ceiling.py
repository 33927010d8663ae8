"""The service's ceiling: in-process onnxruntime throughput of the same model at the same batch sizes.

Reuses :mod:`benchmarks.onnx_throughput` (same session options as the service: ``threads`` intra-op threads,
one inter-op thread, sequential execution, no spinning; real GTSRB test images) and runs it pinned to the
server's cores, so the ceiling and the service are measured on the same CPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from benchmarks.onnx_throughput import _real_images, _session, measure


@dataclass(frozen=True)
class CeilingPoint:
    """In-process throughput at one batch size.

    Attributes:
        images_per_s: batch size / median seconds per onnxruntime call.
        ms_per_batch: median milliseconds per call.
    """

    batch_size: int
    images_per_s: float
    ms_per_batch: float


def measure_ceiling(
    onnx_path: Path,
    data_dir: Path,
    batch_sizes: list[int],
    threads: int,
    seconds: float,
    cores: list[int] | None,
) -> list[CeilingPoint]:
    """Images/s of ``onnx_path`` at each batch size, with this process pinned to ``cores`` meanwhile.

    onnxruntime's intra-op threads are created with the session and inherit the affinity of the creating
    thread, so the session is built after pinning; the original affinity is restored afterwards.
    """
    previous = os.sched_getaffinity(0)
    if cores:
        os.sched_setaffinity(0, cores)
    try:
        images = _real_images(data_dir, max(batch_sizes))
        session = _session(onnx_path, threads)
        points = []
        for size in sorted(set(batch_sizes)):
            rate, ms = measure(session, images[:size], seconds)
            points.append(CeilingPoint(batch_size=size, images_per_s=rate, ms_per_batch=ms))
        del session
        return points
    finally:
        os.sched_setaffinity(0, previous)
