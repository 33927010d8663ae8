"""The alignment experiment (issue 5, part 3): recover a known warp by gradient descent through each sampler.

For each GTSRB test image (the whole 50x50 frame, RGB scaled to [0, 1]) a ground-truth homography ``M*`` is
drawn from the IC-STN perturbation (:func:`training.geometry.perturbation_warps`: each canonical corner moves
by N(0, 1) * 0.25 plus a shared N(0, 1) * 0.25 translation, canonical units, 1 unit = 18 px). The target is
the image sampled through ``M*`` at S = 36 / r pixels a side (rounded half up: 36, 18, 9, 5) with *exact*
bilinear sampling (``grid_sample``, zeros padding, ``align_corners=False``). Starting from the identity, the
8 homography parameters ``p`` (:func:`training.geometry.params_to_matrix`, canonical units) are optimized by
Adam on the L2 image loss ``mean((sample(image, M(p)) - target)^2)`` (mean over the C x S x S values of each
image, summed over images) where ``sample`` is the sampler under test:

* ``bilinear``: torch's bilinear ``grid_sample``;
* ``multiscale``: the mipmap baseline (:mod:`training.sampling.multiscale`);
* ``linearized``: linearized multi-sampling with its stochastic *training* forward (the fitted plane's value,
  default offsets), seeded;
* ``linearized-exact``: the same gradients with the forward value exactly bilinear (the authors'
  ``fixed_bias``); a supplementary variant that separates the gradient from the forward's bias.

All images are optimized at once as one batch, but each image has its own warp and its own loss term, and
Adam's update is elementwise, so the images do not interact. The learning rate decays from ``lr`` to 0 by a
cosine over the iterations. Success: the *corner error*, the mean distance between the 4 corners of the
canonical box mapped by the estimated and by the true warp, in pixels of the 50x50 frame, is below 1 px;
*recall* is the fraction of successes.

The learning rate of each (sampler, rate) cell is chosen by a sweep on separate tuning images (disjoint from
the evaluation images, with their own warps): the rate with the highest tuning recall wins, ties going to the
smaller rate. Everything is seeded (:class:`AlignmentConfig`), so a rerun gives the same figures on the same
machine and torch version.

One file on purpose (about 450 lines): the study's protocol (targets, samplers, the sweep, the cell runner and
its result) reads top to bottom as the experiment is described above.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from training import conventions, geometry
from training.errors import ConfigError, ShapeError
from training.experiments.config import (
    NUM_TEST_IMAGES,
    SAMPLER_VARIANTS,
    AlignmentConfig,
)


def map_corners(warps: torch.Tensor) -> torch.Tensor:
    """The 4 canonical box corners mapped by each warp.

    Args:
        warps: (B, 3, 3) canonical warps (output -> input).

    Returns:
        (B, 4, 2) canonical input coordinates (x, y) of the corners top-left, top-right, bottom-right,
        bottom-left.
    """
    if warps.ndim != 3 or warps.shape[1:] != (3, 3):
        raise ShapeError(f"map_corners: expected (B, 3, 3), got {tuple(warps.shape)}")
    corners = geometry.canonical_corners(warps.dtype, warps.device)
    homogeneous = torch.cat([corners, torch.ones_like(corners[:, :1])], dim=1)  # (4, 3)
    mapped = torch.matmul(homogeneous, warps.transpose(1, 2))  # (B, 4, 3)
    return mapped[..., :2] / mapped[..., 2:]


def corner_error_px(warps: torch.Tensor, true_warps: torch.Tensor) -> torch.Tensor:
    """Mean corner error of estimated warps, in pixels of the 50x50 frame.

    The mean over the 4 canonical box corners of the Euclidean distance between the corner mapped by the
    estimate and by the truth (canonical distances times 18 px). Non-finite results (a degenerate estimate)
    become +inf, which never counts as a success.

    Args:
        warps: (B, 3, 3) estimated canonical warps.
        true_warps: (B, 3, 3) true canonical warps.

    Returns:
        (B,) float64 errors in px.
    """
    if warps.shape != true_warps.shape:
        raise ShapeError(f"corner_error_px: shapes differ: {tuple(warps.shape)} vs {tuple(true_warps.shape)}")
    a, b = map_corners(warps.double()), map_corners(true_warps.double())
    err = (a - b).norm(dim=-1).mean(dim=1) * geometry.CANONICAL_UNIT_PX
    return torch.where(torch.isfinite(err), err, torch.full_like(err, math.inf))


def alignment_targets(images: torch.Tensor, true_warps: torch.Tensor, size: int) -> torch.Tensor:
    """The targets: each image sampled through its true warp with exact bilinear sampling.

    Args:
        images: (B, C, 50, 50) float images (the whole frame).
        true_warps: (B, 3, 3) canonical warps.
        size: S, the side of the target.

    Returns:
        (B, C, S, S), zeros outside the frame (``align_corners=False``).
    """
    return geometry.warp_images(images, true_warps.to(images.dtype), size)


def sample_through(
    images: torch.Tensor,
    warps: torch.Tensor,
    size: int,
    sampler: str,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample the S x S crop of ``images`` (B, C, 50, 50) through ``warps`` (B, 3, 3) with a named sampler.

    Differentiable w.r.t. ``warps``; the linearized variants draw their offsets from ``generator``.

    Returns:
        (B, C, S, S).
    """
    from training.sampling import grid_sample

    if sampler not in SAMPLER_VARIANTS:
        raise ConfigError(f"sampler: expected one of {', '.join(SAMPLER_VARIANTS)}, got {sampler!r}")
    mode, exact = SAMPLER_VARIANTS[sampler]
    grid = geometry.sampling_grid(warps.to(images.dtype), size)
    if mode == "bilinear":
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if mode == "linearized":
        return grid_sample(images, grid, mode, "zeros", False, exact_forward=exact, generator=generator)
    return grid_sample(images, grid, mode, "zeros", False)


def align(
    images: torch.Tensor,
    targets: torch.Tensor,
    sampler: str,
    *,
    lr: float,
    iterations: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Estimate the warps that produce ``targets`` from ``images`` by Adam from the identity.

    Args:
        images: (B, C, 50, 50) float sources.
        targets: (B, C, S, S) float targets.
        sampler: a name of :data:`SAMPLER_VARIANTS`.
        lr: Adam's initial learning rate (decays to 0 by a cosine over ``iterations``).
        iterations: optimizer steps.
        generator: random generator of the linearized offsets.

    Returns:
        (B, 3, 3) estimated canonical warps (detached).
    """
    if targets.ndim != 4 or targets.shape[:2] != images.shape[:2] or targets.shape[2] != targets.shape[3]:
        raise ShapeError(
            f"align: expected targets (B, C, S, S) matching images {tuple(images.shape)}, got "
            f"{tuple(targets.shape)}"
        )
    size = int(targets.shape[-1])
    params = torch.zeros(images.shape[0], 8, dtype=images.dtype, requires_grad=True)
    optimizer = torch.optim.Adam([params], lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, iterations) / iterations))
    )
    for _ in range(iterations):
        warps = geometry.params_to_matrix(params, "homography")
        out = sample_through(images, warps, size, sampler, generator)
        loss = (out - targets).square().mean(dim=(1, 2, 3)).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        return geometry.params_to_matrix(params.detach(), "homography")


@dataclass
class CellResult:
    """One (sampler, rate) cell of the study.

    Attributes:
        sampler: a name of :data:`SAMPLER_VARIANTS`.
        rate: downsampling rate r.
        size: S = 36 / r rounded half up.
        lr: Adam's initial learning rate used.
        iterations: Adam steps.
        num_images: images aligned.
        successes: images with a corner error below the threshold.
        recall: ``successes / num_images``.
        median_px, mean_px, p90_px: statistics of the final corner errors (px; the mean over finite ones).
        initial_median_px: median corner error of the identity (the starting point).
        wall_time_s: seconds for this cell's optimization.
        errors_px: the final corner error of every image, px, rounded to 1e-4 (inf: diverged).
    """

    sampler: str
    rate: int
    size: int
    lr: float
    iterations: int
    num_images: int
    successes: int
    recall: float
    median_px: float
    mean_px: float
    p90_px: float
    initial_median_px: float
    wall_time_s: float
    errors_px: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The figures without the per-image errors."""
        out = asdict(self)
        del out["errors_px"]
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (per-image errors included; inf written as the string ``"inf"``)."""
        out = asdict(self)
        out["errors_px"] = [e if math.isfinite(e) else "inf" for e in self.errors_px]
        return out


def run_cell(
    images: torch.Tensor,
    true_warps: torch.Tensor,
    sampler: str,
    rate: int,
    *,
    lr: float,
    iterations: int,
    seed: int,
    success_px: float = 1.0,
) -> CellResult:
    """Align every image to its target at one rate with one sampler and score it.

    Args:
        images: (B, C, 50, 50) float sources in [0, 1].
        true_warps: (B, 3, 3) canonical ground-truth warps.
        sampler: a name of :data:`SAMPLER_VARIANTS`.
        rate: downsampling rate r (S = 36 / r).
        lr: Adam's initial learning rate.
        iterations: Adam steps.
        seed: seed of the linearized offsets (a fresh generator, so the cell is reproducible on its own).
        success_px: success threshold, px.

    Returns:
        The :class:`CellResult`.
    """
    size = conventions.crop_size(rate)
    targets = alignment_targets(images, true_warps, size)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    estimate = align(images, targets, sampler, lr=lr, iterations=iterations, generator=generator)
    wall = time.perf_counter() - start
    errors = corner_error_px(estimate, true_warps)
    identity = torch.eye(3, dtype=true_warps.dtype).expand_as(true_warps)
    initial = corner_error_px(identity, true_warps)
    finite = errors[torch.isfinite(errors)]
    successes = int((errors < success_px).sum())
    return CellResult(
        sampler=sampler,
        rate=rate,
        size=size,
        lr=lr,
        iterations=iterations,
        num_images=int(images.shape[0]),
        successes=successes,
        recall=successes / max(1, int(images.shape[0])),
        median_px=float(errors.median()),
        mean_px=float(finite.mean()) if finite.numel() else math.inf,
        p90_px=float(torch.quantile(errors.clamp(max=1e6), 0.9)),
        initial_median_px=float(initial.median()),
        wall_time_s=wall,
        errors_px=[round(float(e), 4) if math.isfinite(e) else math.inf for e in errors.tolist()],
    )


def choose_lr(sweep: Sequence[CellResult]) -> float:
    """The learning rate of the best tuning recall (ties: the smaller rate)."""
    if not sweep:
        raise ConfigError("choose_lr: empty sweep")
    best = max(sweep, key=lambda c: (c.successes, -c.lr))
    return best.lr


def select_rows(config: AlignmentConfig, total: int = NUM_TEST_IMAGES) -> tuple[np.ndarray, np.ndarray]:
    """Evaluation and tuning rows of the test set: a seeded permutation, first ``num_images`` then
    ``tune_images`` (each sorted)."""
    order = np.random.default_rng(config.seed).permutation(total)
    evaluation = np.sort(order[: config.num_images])
    tuning = np.sort(order[config.num_images : config.num_images + config.tune_images])
    return evaluation, tuning


def true_warps_for(config: AlignmentConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The ground-truth warps: one draw of ``num_images + tune_images`` from a generator seeded with
    ``config.seed``; (evaluation (N, 3, 3), tuning (M, 3, 3)), float32 canonical."""
    warps = geometry.perturbation_warps(
        config.num_images + config.tune_images,
        scale=config.perturbation_scale,
        translation_scale=config.translation_scale,
        generator=torch.Generator().manual_seed(config.seed),
    )
    return warps[: config.num_images], warps[config.num_images :]


def environment() -> dict[str, Any]:
    """Where the study ran: CPU model, logical CPUs, torch version and threads, platform."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "device": "cpu",
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch": str(torch.__version__),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


@dataclass
class StudyResult:
    """A whole study: the config, the sweep, the cells, timings and the environment."""

    config: AlignmentConfig
    cells: list[CellResult]
    sweep: list[CellResult]
    chosen_lr: dict[str, float]
    wall_time_s: float
    environment: dict[str, Any]
    command: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The study summary (no per-image errors; those are in the cell files)."""
        return {
            "experiment": "alignment",
            "config": asdict(self.config),
            "command": self.command,
            "environment": self.environment,
            "wall_time_s": self.wall_time_s,
            "chosen_lr": self.chosen_lr,
            "sweep": [c.summary() for c in self.sweep],
            "cells": [c.summary() for c in self.cells],
        }


def cell_key(sampler: str, rate: int) -> str:
    """File stem and dict key of a cell: ``<sampler>-r<rate>``."""
    return f"{sampler}-r{rate}"


def run_study(
    config: AlignmentConfig,
    images: torch.Tensor,
    warps: torch.Tensor,
    tune_images: torch.Tensor | None = None,
    tune_warps: torch.Tensor | None = None,
    *,
    log: Callable[[str], None] | None = None,
) -> StudyResult:
    """Sweep the learning rate on the tuning images, then run every (sampler, rate) cell.

    Args:
        config: the study.
        images: (N, 3, 50, 50) evaluation images in [0, 1]; warps (N, 3, 3) their true warps.
        tune_images: (M, 3, 50, 50) tuning images (None or empty: no sweep, ``lrs[0]`` everywhere);
            tune_warps (M, 3, 3).
        log: called with one progress line per cell.

    Returns:
        The :class:`StudyResult` (environment filled in; ``command`` left empty).
    """
    say = log or (lambda _line: None)
    start = time.perf_counter()
    sweep: list[CellResult] = []
    chosen: dict[str, float] = {}
    for sampler in config.samplers:
        for rate in config.rates:
            key = cell_key(sampler, rate)
            sweeping = tune_images is not None and tune_warps is not None and len(tune_images) > 0
            if sweeping and tune_images is not None and tune_warps is not None and len(config.lrs) > 1:
                tried = [
                    run_cell(
                        tune_images,
                        tune_warps,
                        sampler,
                        rate,
                        lr=lr,
                        iterations=config.iterations,
                        seed=config.seed + 1,
                        success_px=config.success_px,
                    )
                    for lr in config.lrs
                ]
                sweep.extend(tried)
                chosen[key] = choose_lr(tried)
                say(f"sweep {key}: " + ", ".join(f"lr {c.lr:g} recall {c.recall:.3f}" for c in tried))
            else:
                chosen[key] = config.lrs[0]
    cells: list[CellResult] = []
    for sampler in config.samplers:
        for rate in config.rates:
            key = cell_key(sampler, rate)
            cell = run_cell(
                images,
                warps,
                sampler,
                rate,
                lr=chosen[key],
                iterations=config.iterations,
                seed=config.seed + 1,
                success_px=config.success_px,
            )
            cells.append(cell)
            say(
                f"{key}: recall {cell.recall:.3f} ({cell.successes}/{cell.num_images}), median "
                f"{cell.median_px:.2f} px, lr {cell.lr:g}, {cell.wall_time_s:.1f} s"
            )
    return StudyResult(config, cells, sweep, chosen, time.perf_counter() - start, environment())


def write_study(result: StudyResult, out_dir: str | Path) -> list[Path]:
    """Write ``study.json`` and ``cells/<sampler>-r<rate>.json`` (per-image errors) under ``out_dir``."""
    out = Path(out_dir)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    paths = [out / "study.json"]
    paths[0].write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    for cell in result.cells:
        path = out / "cells" / f"{cell_key(cell.sampler, cell.rate)}.json"
        path.write_text(json.dumps(cell.to_dict()) + "\n", encoding="utf-8")
        paths.append(path)
    return paths
