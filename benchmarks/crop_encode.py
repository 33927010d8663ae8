"""What the aligned crop costs per image, per format: render + encode on one core (issue 15, "Crop formats").

For real GTSRB test photos at their original resolution, the default bundle predicts the warps (onnxruntime,
batched; not timed); then, on one CPU core, each photo's crop is rendered exactly as the service renders it
(``service.imaging.render_crop``: Pillow's PERSPECTIVE transform, bilinear, at ``--crop-size``; exact for PNG,
at 2 samples per source pixel then enlarged for JPEG and WebP) and encoded as the service encodes it
(``service.imaging.crop_data_url``: the format's encoder plus the base64 data URL). A last row times JPEG
after the exact rendering, for comparison.
Each image is timed ``--repeats`` times and its fastest run kept (other processes on the machine only ever
add time); the table gives the median and the 90th percentile over the images, the mean encoded size, and
the median and largest (over the images) mean absolute difference, in grey levels, of the decoded crop from
the exact rendering (PNG's).

    .venv/bin/python -m benchmarks.crop_encode --images 200 --crop-size 128

The service's default crop format is the one whose render + encode median stays within ``--budget-ms``
(0.3 ms, the issue's bound), or else the cheapest.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort
import PIL
from PIL import Image

from service.geometry import crop_transform
from service.imaging import (
    CROP_MEDIA_TYPES,
    DEFAULT_CROP_QUALITY,
    LOSSY_SAMPLES_PER_PIXEL,
    PNG_COMPRESS_LEVEL,
    crop_data_url,
    decode_image,
    encode_crop,
    preprocess,
    render_crop,
)

REPO = Path(__file__).resolve().parents[1]
FRAME = (50, 50)
BOX = (7.0, 7.0, 43.0, 43.0)


def _pin_to_one_core(core: int | None) -> int | None:
    """Run this process on one core (the last one it may use, unless ``core`` says which)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    chosen = allowed[-1] if core is None else core
    os.sched_setaffinity(0, {chosen})
    return chosen


def _transforms(
    models_dir: Path, data_dir: Path, count: int, crop_size: int
) -> list[tuple[Image.Image, np.ndarray]]:
    """``count`` photos (every n-th of test_originals) and the default model's crop matrix for each."""
    name = (models_dir / "DEFAULT").read_text(encoding="utf-8").strip()
    session = ort.InferenceSession(str(models_dir / name / "model.onnx"), providers=["CPUExecutionProvider"])
    paths = sorted((data_dir / "test_originals").glob("*.png"))
    paths = paths[:: max(1, len(paths) // count)][:count]
    images = [decode_image(p.read_bytes(), max_pixels=40_000_000) for p in paths]
    batch = np.stack([preprocess(image) for image in images])
    warps = np.concatenate(
        [session.run(["warp"], {"image": batch[i : i + 64]})[0] for i in range(0, len(batch), 64)]
    )
    out = []
    for image, warp in zip(images, warps, strict=True):
        t = crop_transform(warp, image_size=image.size, crop_size=crop_size, frame=FRAME, box=BOX)
        if t is not None:
            out.append((image, t.image_from_crop))
    return out


def _fastest(call: Callable[[], object], repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` runs of ``call()``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="GTSRB test photos (every n-th)")
    parser.add_argument("--crop-size", type=int, default=128, help="crop pixels a side (the service default)")
    parser.add_argument("--quality", type=int, default=DEFAULT_CROP_QUALITY, help="JPEG and WebP quality")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per image; the fastest is kept")
    parser.add_argument("--core", type=int, default=None, help="CPU core to pin to (default: the last)")
    parser.add_argument("--budget-ms", type=float, default=0.3, help="render + encode bound for the default")
    parser.add_argument("--models-dir", type=Path, default=REPO / "models")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("GTSRB_DATA_DIR", REPO.parent / "shared" / "data" / "gtsrb")),
    )
    args = parser.parse_args()

    core = _pin_to_one_core(args.core)
    items = _transforms(args.models_dir, args.data_dir, args.images, args.crop_size)
    size, quality = args.crop_size, args.quality
    print(
        f"# {len(items)} GTSRB test photos, crop {size}x{size}, quality {quality} (JPEG, WebP), PNG zlib "
        f"level {PNG_COMPRESS_LEVEL}, one core ({core}), fastest of {args.repeats} runs per image"
    )
    print(f"# {platform.machine()}, Python {platform.python_version()}, Pillow {PIL.__version__}")
    print(
        "| crop | render | render ms | encode ms | render + encode ms | bytes | data URL bytes "
        "| mean abs diff from the exact rendering |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print("| none | - | 0 | 0 | 0 | 0 | 0 | - |")
    exact = [np.asarray(render_crop(im, m, size), dtype=np.float64) for im, m in items]
    rows = [(fmt, None if fmt == "png" else LOSSY_SAMPLES_PER_PIXEL) for fmt in CROP_MEDIA_TYPES]
    rows.append(("jpeg", None))  # the exact rendering, for comparison
    totals: dict[str, float] = {}
    for fmt, samples in rows:
        render_ms = _per_image(
            [partial(render_crop, im, m, size, samples_per_pixel=samples) for im, m in items], args.repeats
        )
        crops = [render_crop(im, m, size, samples_per_pixel=samples) for im, m in items]
        encode_ms = _per_image([partial(crop_data_url, c, fmt, quality) for c in crops], args.repeats)
        total = render_ms + encode_ms
        nbytes = np.mean([len(encode_crop(c, fmt, quality)) for c in crops])
        url = np.mean([len(crop_data_url(c, fmt, quality)) for c in crops])
        decoded = [Image.open(io.BytesIO(encode_crop(c, fmt, quality))).convert("RGB") for c in crops]
        diff = np.array(
            [np.abs(np.asarray(d, dtype=np.float64) - e).mean() for d, e in zip(decoded, exact, strict=True)]
        )
        how = "exact" if samples is None else f"{samples:g} samples/px"
        print(
            f"| {fmt} | {how} | {_cell(render_ms)} | {_cell(encode_ms)} | {_cell(total)} | {nbytes:,.0f} "
            f"| {url:,.0f} | {np.median(diff):.2f} / {diff.max():.2f} |"
        )
        if (fmt == "png") == (samples is None):  # the service's path for this format
            totals[fmt] = float(np.median(total))
    within = [fmt for fmt, ms in totals.items() if ms <= args.budget_ms]
    cheapest = min(totals, key=totals.__getitem__)
    print(
        f"# median render + encode within {args.budget_ms} ms: {', '.join(within) or 'no image format'}; "
        f"cheapest: {cheapest} ({totals[cheapest]:.3f} ms)"
    )


def _per_image(calls: list[partial[object]], repeats: int) -> np.ndarray:
    """Milliseconds of the fastest of ``repeats`` runs of each call."""
    return np.array([_fastest(call, repeats) for call in calls]) * 1e3


def _cell(values: np.ndarray) -> str:
    """``median / p90`` of per-image milliseconds."""
    return f"{np.median(values):.3f} / {np.percentile(values, 90):.3f}"


if __name__ == "__main__":
    main()
