"""Gradient-direction diagnostics: does the gradient w.r.t. a translation point back to the aligned crop?

The experiment of the paper's "gradient direction" figure: sample the canonical crop of an image, translated
by a known offset ``t``, at a low output resolution; the loss is the squared difference to the crop sampled at
``t = 0`` (bilinear, as the authors' visualizer); the descent direction ``-dL/dt`` should point back towards
the aligned position, i.e. along ``-t``.

Convention: translations are in normalized coordinates of the input (x then y; one input pixel is ``2 / W``);
the canonical crop is the central box of half-size ``box`` (0.72 for the central 36 x 36 pixels of a 50 x 50
image, align_corners=False).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from training.sampling.functional import grid_sample

CANONICAL_BOX = 0.72
"""Half-size of the canonical crop in normalized coordinates: the central 36 of 50 pixels."""


def crop_grid(translation: torch.Tensor, size: int, box: float = CANONICAL_BOX) -> torch.Tensor:
    """Grid of the translated canonical crop.

    Args:
        translation: (B, 2) offsets, normalized, x then y.
        size: S, output pixels per side.
        box: half-size of the crop, normalized.

    Returns:
        (B, S, S, 2) grid, normalized, x then y, for align_corners=False (output pixel centres).
    """
    centres = (
        torch.arange(size, dtype=translation.dtype, device=translation.device) + 0.5
    ) / size * 2.0 - 1.0
    ys, xs = torch.meshgrid(centres * box, centres * box, indexing="ij")
    base = torch.stack((xs, ys), dim=-1)
    return base.unsqueeze(0) + translation.view(-1, 1, 1, 2)


def translation_descent(
    images: torch.Tensor,
    translation: torch.Tensor,
    size: int,
    mode: str,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Descent direction ``-dL/dt`` of the alignment loss at translation ``t``, per image.

    Args:
        images: (B, C, H, W), any value range.
        translation: (B, 2) current offsets ``t``, normalized, x then y.
        size: S, output pixels per side of the crop (36 / r for downsampling rate r on 50 x 50 images).
        mode: sampler used for the translated crop (a mode of :func:`grid_sample`).
        generator: random generator for the linearized sampler.

    Returns:
        (B, 2) ``-dL/dt`` with ``L = sum (sample(images, crop(t)) - bilinear(images, crop(0)))^2``.
    """
    target = F.grid_sample(
        images, crop_grid(torch.zeros_like(translation), size), mode="bilinear", align_corners=False
    )
    t = translation.detach().clone().requires_grad_(True)
    warped = grid_sample(images, crop_grid(t, size), mode, "zeros", False, generator=generator)
    loss = (warped - target).square().sum()
    (grad,) = torch.autograd.grad(loss, t)
    return -grad


def direction_cosine(descent: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """Cosine between the descent direction and the way back, ``-t``: (B,) in [-1, 1], 0 for a zero vector."""
    return F.cosine_similarity(descent, -translation, dim=1, eps=1e-12)
