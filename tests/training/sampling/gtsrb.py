"""GTSRB images for the sampler tests: :func:`training.data.tensors.packed_images` (float32 (B, 3, 50, 50) RGB
in [0, 1]), the helper the benchmarks use too."""

from __future__ import annotations

from training.data.tensors import packed_images as load_images

__all__ = ["load_images"]
