"""The "gradient direction" figure: a field of descent directions w.r.t. a translation, per sampler.

For each translation ``t`` of a grid of offsets (in pixels), the canonical 36 x 36 crop of a GTSRB image is
sampled at a low resolution (36 / r pixels a side) at ``t``, compared with the crop at ``t = 0``, and the
descent direction ``-dL/dt`` is drawn as an arrow at ``t``: it should point back to the centre. Arrows are
coloured by their angle to the way back (green: towards the centre, red: away). Rows: downsampling rates;
columns: samplers.

Run from the repository root::

    .venv/bin/python -m benchmarks.gradient_field --out docs/figures/gradient_field.png
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from training.data.tensors import packed_images
from training.sampling.diagnostics import direction_cosine, translation_descent

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "gtsrb" / "gtsrb50_test_lossless.npz"
SAMPLERS = ("bilinear", "linearized", "multiscale")
RATES = ((4, 9), (8, 5))  # (downsampling rate, crop size S)


def descent_field(
    image: torch.Tensor, size: int, mode: str, extent: float, steps: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Translations (T, 2) in pixels, unit descent directions (T, 2) and their cosines (T,) with ``-t``."""
    offsets = torch.linspace(-extent, extent, steps)
    ys, xs = torch.meshgrid(offsets, offsets, indexing="ij")
    pixels = torch.stack((xs.flatten(), ys.flatten()), dim=1)
    pixels = pixels[pixels.norm(dim=1) > 1e-6]
    translation = pixels * (2.0 / image.shape[-1])
    images = image.unsqueeze(0).expand(translation.shape[0], -1, -1, -1)
    generator = torch.Generator().manual_seed(0)
    descent = translation_descent(images, translation, size, mode, generator=generator)
    cosine = direction_cosine(descent, translation)
    unit = descent / descent.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return pixels, unit, cosine


def draw(image: torch.Tensor, out: Path, extent: float, steps: int) -> None:
    """Draw the figure for one (3, 50, 50) image in [0, 1] and save it to ``out`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(RATES), len(SAMPLERS), figsize=(4.2 * len(SAMPLERS), 4.7 * len(RATES)))
    half = image.shape[-1] / 2.0
    picture = image.permute(1, 2, 0).numpy()
    for row, (rate, size) in enumerate(RATES):
        for col, mode in enumerate(SAMPLERS):
            ax = axes[row][col]
            pixels, unit, cosine = descent_field(image, size, mode, extent, steps)
            ax.imshow(picture, extent=(-half, half, half, -half), alpha=0.55)
            ax.add_patch(plt.Rectangle((-18, -18), 36, 36, fill=False, edgecolor="white", linewidth=1.0))
            angle = torch.arccos(cosine.clamp(-1.0, 1.0)) / math.pi  # 0: towards the centre, 1: away
            colours = [(float(a), float(1.0 - a), 0.0) for a in angle]
            length = 0.8 * 2.0 * extent / (steps - 1)
            ax.quiver(
                pixels[:, 0].numpy(),
                pixels[:, 1].numpy(),
                (unit[:, 0] * length).numpy(),
                (unit[:, 1] * length).numpy(),
                color=colours,
                angles="xy",
                scale_units="xy",
                scale=1.0,
                width=0.006,
            )
            ax.set_xlim(-half, half)
            ax.set_ylim(half, -half)
            share = float((cosine > 0).float().mean())
            ax.set_title(f"{mode}, {rate}x ({size}x{size}): {share:.0%} point back", fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("Descent direction w.r.t. the translation of the crop (arrow at the offset, in pixels)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="gtsrb50_*.npz file")
    parser.add_argument("--index", type=int, default=6315, help="image row in the file")
    parser.add_argument("--extent", type=float, default=15.0, help="largest offset, pixels")
    parser.add_argument("--steps", type=int, default=11, help="offsets per axis")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "figures" / "gradient_field.png")
    args = parser.parse_args()
    image = packed_images(args.data, [args.index])[0]
    draw(image, args.out, args.extent, args.steps)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
