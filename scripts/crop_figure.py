"""Draw docs/figures/crop_comparison.png: several checkpoints' aligned crops on the same test photos.

    .venv/bin/python -m scripts.crop_figure --model 1.2.0=runs/stn-1.2.0.pt \
        --model 2.0.0=models/stn-linearized/checkpoint.pt --photos 00829,00005,00028 \
        --out docs/figures/crop_comparison.png

Each model runs clean (identity initial warp, the service's case) on the lossless 50x50 test frames; the
figure shows the annotated sign box and each model's crop quadrilateral, and under them the crops.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from training import alignment, plots
from training.data import load_gtsrb, resolve_data_dir
from training.models import load_checkpoint


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run each model on the chosen photos, write the PNG."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="NAME=CHECKPOINT (repeatable)")
    parser.add_argument("--photos", required=True, help="comma-separated official test file numbers")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--data-dir", help="GTSRB folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    test = load_gtsrb(resolve_data_dir(args.data_dir), "test", variant="lossless")
    if test.names is None or test.roi50 is None:
        print("error: the test file carries no file numbers or sign boxes", file=sys.stderr)
        return 2
    wanted = [p.strip() for p in args.photos.split(",") if p.strip()]
    index = {str(name): i for i, name in enumerate(test.names)}
    missing = [p for p in wanted if p not in index]
    if missing:
        print(f"error: no test photo {missing[0]}", file=sys.stderr)
        return 2
    rows = np.array([index[p] for p in wanted])
    images = test.images[rows]
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    quads: dict[str, np.ndarray] = {}
    crops: dict[str, np.ndarray] = {}
    for spec in args.model:
        name, _, path = spec.partition("=")
        model = load_checkpoint(path).model.eval()
        with torch.no_grad():
            out = model(x)
        quads[name] = alignment.crop_quads(out.warp.double().numpy())
        crops[name] = out.crop.float().numpy()
    boxes = test.roi50[rows]
    iou = {name: alignment.quad_box_iou(q, boxes) for name, q in quads.items()}
    titles = [f"{p}: " + " / ".join(f"{iou[n][i]:.2f}" for n in quads) for i, p in enumerate(wanted)]
    written = plots.plot_crop_comparison(images, boxes, quads, crops, titles, Path(args.out))
    print(f"wrote {written} (titles: photo, IoU with the annotated box per model: {', '.join(quads)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
