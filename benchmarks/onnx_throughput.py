"""In-process onnxruntime throughput of the model bundles: the service's ceiling.

Prints, for each bundle and batch size, images/s and milliseconds per batch (median of repeated runs) with the
thread settings the service uses (intra-op threads = --threads, one inter-op thread, sequential execution, no
spinning). Input: real GTSRB test images (the packed lossless arrays), so the numbers include nothing but the
graph.

    .venv/bin/python -m benchmarks.onnx_throughput --threads 2 --models-dir models
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image


def _real_images(data_dir: Path, count: int) -> np.ndarray:
    """(count, 3, 50, 50) float32 0..255 RGB images decoded from gtsrb50_test_lossless.npz."""
    packed = np.load(data_dir / "gtsrb50_test_lossless.npz", allow_pickle=False)
    buf, off = packed["image_bytes"], packed["image_offsets"]
    images = [
        np.asarray(Image.open(io.BytesIO(buf[off[i] : off[i + 1]].tobytes())).convert("RGB"))
        for i in range(count)
    ]
    return np.stack(images).transpose(0, 3, 1, 2).astype(np.float32)


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def measure(session: ort.InferenceSession, batch: np.ndarray, seconds: float) -> tuple[float, float]:
    """(images/s, median ms per batch) over about ``seconds`` of repeated runs after a warm-up."""
    for _ in range(3):
        session.run(None, {"image": batch})
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        start = time.perf_counter()
        session.run(None, {"image": batch})
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return len(batch) / median, 1000 * median


def main() -> None:
    """Print the throughput table as markdown."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("GTSRB_DATA_DIR", "../shared/data/gtsrb"))
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per cell")
    args = parser.parse_args()

    images = _real_images(args.data_dir, max(args.batch_sizes))
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible; "
        f"onnxruntime {ort.__version__}, {args.threads} intra-op threads"
    )
    print("\n| model | batch | images/s | ms per batch |\n|---|---:|---:|---:|")
    for onnx_path in sorted(args.models_dir.glob("*/model.onnx")):
        session = _session(onnx_path, args.threads)
        for size in args.batch_sizes:
            rate, ms = measure(session, images[:size], args.seconds)
            print(f"| {onnx_path.parent.name} | {size} | {rate:,.0f} | {ms:.2f} |", flush=True)


if __name__ == "__main__":
    main()
