"""Test-set evaluation: clean and perturbed error, overall and per class, in eval mode.

The perturbed figure uses IC-STN perturbations drawn once for the whole test set from a generator seeded
with a fixed seed (default 1234), so it is reproducible and does not depend on the batch size. Eval mode makes
the sampler deterministic (its ``inference_forward``: exact bilinear, or bilinear over a Gaussian-prefiltered
input), the same forward the exported ONNX graph runs.

Rotated GTSRB (``data.rotation_deg > 0``, issue 5): the perturbed pass also rotates every image's pixels
(``geometry.rotate_frames``: about the crop centre, zeros outside the frame) by an angle uniform in
[-rotation_deg, rotation_deg], drawn once for the whole set from a generator seeded with
``rotation_seed(seed)`` (:func:`fixed_rotations`); the same angles drive :func:`rotation_study`, so the
angle-against-rotation figure and the rotated error are measured on the same inputs. The rotation is in the
pixels, not in the initial warp, so every model (STN-C's first layers too) sees rotated signs.

One file on purpose (about 450 lines): every reported figure (test, validation, rotated, alignment) comes from
the one :func:`evaluate_arrays` protocol and its :class:`EvalResult` here, so they cannot drift apart.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from training import alignment, geometry
from training.models.common import TransformerClassifier

DEFAULT_EVAL_SEED = 1234


@dataclass
class EvalResult:
    """The figures of one evaluation (error fractions in [0, 1]; JSON via :meth:`to_dict`).

    Attributes:
        test_set: what was evaluated (file and number of images).
        num_images: N.
        error_clean: error with the identity initial warp (the central box; the service case).
        error_perturbed: error under the fixed-seed IC-STN perturbations.
        per_class_clean, per_class_perturbed: error per class id (None for a class without images).
        class_counts: images per class id.
        perturbation: ``{"scale", "translation_scale", "seed"}`` in canonical units.
        inference_forward: the sampler's deterministic forward that produced the figures.
        sampler: the sampler's training mode.
        wall_time_s: seconds the evaluation took.
        checkpoint: the checkpoint evaluated, when known.
        alignment: crop alignment against the annotated sign boxes, ``{"clean": ..., "perturbed": ...}``
            (:class:`training.alignment.AlignmentFigures` as dicts), when the images carry ``roi50``.
        extra: anything else a caller records (training wall time, rotation study).
    """

    test_set: str
    num_images: int
    error_clean: float
    error_perturbed: float
    per_class_clean: list[float | None]
    per_class_perturbed: list[float | None]
    class_counts: list[int]
    perturbation: dict[str, float | int]
    inference_forward: str
    sampler: str
    wall_time_s: float
    checkpoint: str | None = None
    alignment: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return asdict(self)

    def write_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as indented JSON."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path


@dataclass
class EvalArrays:
    """Per-image outputs of an evaluation (for plots; not written to JSON).

    Attributes:
        labels: (N,) int64.
        pred_clean, pred_perturbed: (N,) int64 predicted classes.
        crops_perturbed: (N, 3, S, S) float32 0..255 aligned crops of the perturbed pass (None unless
            requested).
        warps_perturbed: (N, 3, 3) float32 final canonical warps of the perturbed pass.
        warps_clean: (N, 3, 3) float32 final canonical warps of the clean pass.
    """

    labels: np.ndarray
    pred_clean: np.ndarray
    pred_perturbed: np.ndarray
    crops_perturbed: np.ndarray | None
    warps_perturbed: np.ndarray
    warps_clean: np.ndarray | None = None


def describe_test_set(source: str, n: int) -> str:
    """The ``test_set`` text of a result: ``GTSRB Final_Test, 12630 images (gtsrb50_test_lossless.npz)``."""
    return f"GTSRB Final_Test, {n} images ({Path(source).name})"


def inference_forward_of(model: TransformerClassifier) -> str:
    """The sampler forward ``model`` uses in eval mode (``bilinear``, ``expected``, ...)."""
    return str(model.warp_sampler.sampler.inference_forward)


def fixed_perturbations(n: int, *, scale: float, translation_scale: float, seed: int) -> torch.Tensor:
    """The (n, 3, 3) canonical IC-STN perturbations of an evaluation, drawn at once from ``seed`` (CPU)."""
    gen = torch.Generator().manual_seed(seed)
    return geometry.perturbation_warps(
        n, scale=scale, translation_scale=translation_scale, generator=gen, dtype=torch.float32
    )


ROTATION_SEED_OFFSET = 1
"""The rotations of an evaluation are seeded with ``seed + 1``, so they do not share the perturbations'
random stream (both generators would otherwise start from the same state)."""


def rotation_seed(seed: int) -> int:
    """Seed of the fixed test rotations of an evaluation seeded with ``seed``."""
    return seed + ROTATION_SEED_OFFSET


def fixed_rotations(n: int, *, max_deg: float, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """The (n, 3, 3) float32 canonical rotations of an evaluation and their angles (n,) in degrees (float64).

    Drawn at once from a CPU generator seeded with ``seed`` (``geometry.random_rotations``): image i's
    content is rotated by ``angles[i]``, uniform in [-max_deg, max_deg].
    """
    warps, angles = geometry.random_rotations(n, max_deg, generator=torch.Generator().manual_seed(seed))
    return warps, angles.numpy()


def _per_class(
    labels: np.ndarray, wrong: np.ndarray, num_classes: int
) -> tuple[list[float | None], list[int]]:
    counts = np.bincount(labels, minlength=num_classes)
    errors = np.bincount(labels, weights=wrong.astype(np.float64), minlength=num_classes)
    return [float(e / c) if c else None for e, c in zip(errors, counts, strict=True)], [
        int(c) for c in counts
    ]


@torch.no_grad()
def evaluate_arrays(
    model: TransformerClassifier,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    scale: float = 0.25,
    translation_scale: float = 0.25,
    seed: int = DEFAULT_EVAL_SEED,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    keep_crops: bool = False,
    test_set: str = "",
    rotation_deg: float = 0.0,
    roi50: np.ndarray | None = None,
) -> tuple[EvalResult, EvalArrays]:
    """Evaluate ``model`` on images in eval mode, clean and perturbed.

    Args:
        model: the (unwrapped) model; put in eval mode here and restored to its previous mode afterwards.
        images: (N, 50, 50, 3) uint8 RGB.
        labels: (N,) int class ids.
        scale, translation_scale: the perturbation (canonical units).
        seed: seed of the perturbations (drawn for all N images at once).
        batch_size: images per forward pass.
        device: where to run.
        keep_crops: also return the perturbed pass's aligned crops (N, 3, S, S).
        test_set: description recorded in the result.
        rotation_deg: when > 0, the perturbed pass first rotates each image's pixels by a fixed angle uniform
            in [-rotation_deg, rotation_deg] (:func:`fixed_rotations` seeded with ``rotation_seed(seed)``,
            ``geometry.rotate_frames``), then perturbs the crop as usual; the result's ``perturbation`` then
            records ``rotation_deg`` and ``rotation_seed``.
        roi50: (N, 4) annotated sign boxes in 50x50-frame pixels; when given (and no rotation is applied),
            the result's ``alignment`` holds the crop-alignment figures of both passes.

    Returns:
        ``(EvalResult, EvalArrays)``.
    """
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    device = torch.device(device)
    n = int(labels.shape[0])
    warps = fixed_perturbations(n, scale=scale, translation_scale=translation_scale, seed=seed)
    perturbation: dict[str, float | int] = {
        "scale": scale,
        "translation_scale": translation_scale,
        "seed": seed,
    }
    rotations: torch.Tensor | None = None
    if rotation_deg > 0:
        rotations, _ = fixed_rotations(n, max_deg=rotation_deg, seed=rotation_seed(seed))
        perturbation.update(rotation_deg=rotation_deg, rotation_seed=rotation_seed(seed))
    pred_clean = np.empty(n, dtype=np.int64)
    pred_pert = np.empty(n, dtype=np.int64)
    out_warps = np.empty((n, 3, 3), dtype=np.float32)
    clean_warps = np.empty((n, 3, 3), dtype=np.float32)
    crops: np.ndarray | None = None
    try:
        for lo in range(0, n, batch_size):
            hi = min(n, lo + batch_size)
            x = torch.from_numpy(np.ascontiguousarray(images[lo:hi])).to(device).permute(0, 3, 1, 2).float()
            clean = model(x)
            pred_clean[lo:hi] = clean.logits.argmax(1).cpu().numpy()
            clean_warps[lo:hi] = clean.warp.float().cpu().numpy()
            if rotations is not None:
                x = geometry.rotate_frames(x, rotations[lo:hi])
            out = model(x, warps[lo:hi].to(device))
            pred_pert[lo:hi] = out.logits.argmax(1).cpu().numpy()
            out_warps[lo:hi] = out.warp.float().cpu().numpy()
            if keep_crops:
                if crops is None:
                    crops = np.empty((n, *out.crop.shape[1:]), dtype=np.float32)
                crops[lo:hi] = out.crop.float().cpu().numpy()
    finally:
        model.train(was_training)
    labels = np.asarray(labels, dtype=np.int64)
    k = model.config.num_classes
    wrong_clean = pred_clean != labels
    wrong_pert = pred_pert != labels
    per_clean, counts = _per_class(labels, wrong_clean, k)
    per_pert, _ = _per_class(labels, wrong_pert, k)
    result = EvalResult(
        test_set=test_set,
        num_images=n,
        error_clean=float(wrong_clean.mean()) if n else math.nan,
        error_perturbed=float(wrong_pert.mean()) if n else math.nan,
        per_class_clean=per_clean,
        per_class_perturbed=per_pert,
        class_counts=counts,
        perturbation=perturbation,
        inference_forward=inference_forward_of(model),
        sampler=model.config.sampler,
        wall_time_s=time.perf_counter() - start,
    )
    if roi50 is not None and rotations is None:
        boxes = np.asarray(roi50, dtype=np.float32)
        result.alignment = {
            "reference": "roi50 (GTSRB's annotated sign box in the 50x50 frame)",
            "clean": alignment.alignment_figures(clean_warps, boxes, labels, k).to_dict(),
            "perturbed": alignment.alignment_figures(out_warps, boxes, labels, k).to_dict(),
        }
        result.wall_time_s = time.perf_counter() - start
    return result, EvalArrays(labels, pred_clean, pred_pert, crops, out_warps, clean_warps)


@torch.no_grad()
def rotation_study(
    model: TransformerClassifier,
    images: np.ndarray,
    *,
    max_deg: float = 90.0,
    seed: int = DEFAULT_EVAL_SEED,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """The rotation the transformer predicts against the rotation applied to its input (Finnveden, Fig. 3).

    Each image's pixels are rotated about the crop centre by an angle ``a`` drawn uniformly from
    [-max_deg, max_deg] (seeded; ``geometry.rotate_frames`` with ``rotation_warps(-a)``) and the model runs
    from the identity initial warp, so its final warp is the transformer's own contribution, and that warp's
    angle (``geometry.rotation_angle``) is the rotation it undoes; a perfect aligner gives
    ``predicted == applied``.

    Args:
        model: the (unwrapped) model; evaluated in eval mode, its mode restored afterwards.
        images: (N, 50, 50, 3) uint8 RGB.
        max_deg: largest applied rotation, degrees.
        seed: seed of the angles.
        batch_size: images per forward pass.
        device: where to run.

    Returns:
        ``(applied_deg (N,), predicted_deg (N,))`` float64.
    """
    n = int(images.shape[0])
    rotations, applied = fixed_rotations(n, max_deg=max_deg, seed=seed)
    predicted = np.empty(n, dtype=np.float64)
    was_training = model.training
    model.eval()
    try:
        for lo in range(0, n, batch_size):
            hi = min(n, lo + batch_size)
            x = torch.from_numpy(np.ascontiguousarray(images[lo:hi])).to(device).permute(0, 3, 1, 2).float()
            warp = model(geometry.rotate_frames(x, rotations[lo:hi])).warp.float()
            predicted[lo:hi] = torch.rad2deg(geometry.rotation_angle(warp)).double().cpu().numpy()
    finally:
        model.train(was_training)
    return applied, predicted


def rotation_summary(
    applied_deg: np.ndarray,
    predicted_deg: np.ndarray,
    wrong: np.ndarray | None = None,
    bins_deg: tuple[float, ...] = (0.0, 30.0, 60.0, 90.0),
) -> dict[str, Any]:
    """Figures of a :func:`rotation_study`: how well the transformer undoes the applied rotations.

    Args:
        applied_deg: (N,) applied rotations, degrees.
        predicted_deg: (N,) rotation of the transformer's own warp, degrees.
        wrong: optional (N,) bool, misclassified under the same rotations (error per |angle| bin).
        bins_deg: edges of the |applied| bins (the last bin is closed).

    Returns:
        ``{"num_images", "mean_abs_error_deg", "median_abs_error_deg", "within_15_deg", "slope",
        "intercept_deg", "correlation", "bins": [{"lo", "hi", "num_images", "mean_abs_error_deg", "error"}]}``
        where the angle error is ``predicted - applied`` wrapped to (-180, 180], the slope and intercept are
        the least-squares line ``predicted = slope * applied + intercept`` (1 and 0 for a perfect aligner) and
        ``error`` is the classification error (when ``wrong`` is given).
    """
    a = np.asarray(applied_deg, dtype=np.float64)
    p = np.asarray(predicted_deg, dtype=np.float64)
    if a.ndim != 1 or p.shape != a.shape or a.size < 2:
        raise ValueError(f"rotation_summary: expected two equal (N,), N >= 2, got {a.shape}, {p.shape}")
    err = np.abs((p - a + 180.0) % 360.0 - 180.0)
    slope, intercept = np.polyfit(a, p, 1)
    corr = float(np.corrcoef(a, p)[0, 1]) if p.std() > 0 and a.std() > 0 else 0.0
    bins = []
    for i, (lo, hi) in enumerate(itertools.pairwise(bins_deg)):
        last = i == len(bins_deg) - 2
        sel = (np.abs(a) >= lo) & ((np.abs(a) <= hi) if last else (np.abs(a) < hi))
        entry: dict[str, Any] = {
            "lo": lo,
            "hi": hi,
            "num_images": int(sel.sum()),
            "mean_abs_error_deg": float(err[sel].mean()) if sel.any() else None,
        }
        if wrong is not None:
            entry["error"] = float(np.asarray(wrong)[sel].mean()) if sel.any() else None
        bins.append(entry)
    return {
        "num_images": int(a.size),
        "mean_abs_error_deg": float(err.mean()),
        "median_abs_error_deg": float(np.median(err)),
        "within_15_deg": float((err <= 15.0).mean()),
        "slope": float(slope),
        "intercept_deg": float(intercept),
        "correlation": corr,
        "bins": bins,
    }


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    data_dir: str | Path | None = None,
    limit: int | None = None,
    variant: str | None = "lossless",
    seed: int = DEFAULT_EVAL_SEED,
    scale: float | None = None,
    translation_scale: float | None = None,
    batch_size: int = 256,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
    threads: int | None = None,
    eval_forward: str | None = None,
    rotation_deg: float | None = None,
) -> tuple[EvalResult, EvalArrays]:
    """Load a checkpoint and evaluate it on the GTSRB test set (the full lossless set unless ``limit``).

    The perturbation scales and the test rotation (``data.rotation_deg``) default to the ones the checkpoint
    was trained with (0.25 / 0.25 / 0 otherwise).
    ``eval_forward`` overrides the linearized sampler's inference forward (see :func:`load_checkpoint`);
    the result records the forward used.
    """
    from training.data import load_gtsrb, resolve_data_dir
    from training.models.checkpoint import load_checkpoint

    if threads is not None:
        torch.set_num_threads(threads)
    loaded = load_checkpoint(checkpoint, map_location=device, eval_forward=eval_forward)
    data_cfg = (loaded.train_config or {}).get("data", {})
    scale = float(data_cfg.get("perturbation_scale", 0.25)) if scale is None else scale
    translation_scale = (
        float(data_cfg.get("translation_scale", 0.25)) if translation_scale is None else translation_scale
    )
    rotation_deg = float(data_cfg.get("rotation_deg", 0.0)) if rotation_deg is None else rotation_deg
    root = resolve_data_dir(data_dir)
    split = load_gtsrb(
        root,
        "test",
        variant=cast(Any, variant),
        limit=limit,
        cache_dir=None if cache_dir is None else Path(cache_dir),
    )
    result, arrays = evaluate_arrays(
        loaded.model,
        split.images,
        split.labels,
        scale=scale,
        translation_scale=translation_scale,
        seed=seed,
        batch_size=batch_size,
        device=device,
        test_set=describe_test_set(split.source, len(split)),
        rotation_deg=rotation_deg,
        roi50=split.roi50,
    )
    result.checkpoint = str(checkpoint)
    return result, arrays


def format_result(result: EvalResult, class_names: list[str] | None = None, *, per_class: bool = True) -> str:
    """Human-readable report: overall clean / perturbed error, then one line per class."""
    n = result.num_images
    p = result.perturbation
    rotation = ""
    if "rotation_deg" in p:
        rotation = f", rotation +-{p['rotation_deg']} deg, seed {p['rotation_seed']}"
    lines = [
        f"test set: {result.test_set}",
        f"sampler: {result.sampler} (inference forward: {result.inference_forward})",
        f"clean error:     {100 * result.error_clean:6.3f}% ({round(result.error_clean * n)}/{n})",
        f"perturbed error: {100 * result.error_perturbed:6.3f}% ({round(result.error_perturbed * n)}/{n})"
        f"  [scale {p['scale']}, translation {p['translation_scale']}, seed {p['seed']}{rotation}]",
    ]
    if result.alignment:
        lines.append(
            "crop alignment vs the annotated sign box (IoU median / p5 / >=0.7, corner px, >10% outside):"
        )
        for key in ("clean", "perturbed"):
            a = result.alignment[key]
            lines.append(
                f"  {key:<9} {a['iou_median']:.3f} / {a['iou_p5']:.3f} / {100 * a['share_iou_ge_0_7']:.1f}%, "
                f"{a['mean_corner_px']:.2f} px, {100 * a['share_outside_gt_10pct']:.2f}%"
            )
    if per_class:
        align = result.alignment
        iou_head = f" {'IoU clean':>9} {'IoU pert.':>9} {'>10% out':>8}" if align else ""
        lines.append(f"{'class':>5} {'images':>6} {'clean':>8} {'perturbed':>9}{iou_head}  name")
        for k, count in enumerate(result.class_counts):
            if not count:
                continue
            c, q = result.per_class_clean[k], result.per_class_perturbed[k]
            name = class_names[k] if class_names and k < len(class_names) else ""
            iou = ""
            if align:
                ac, ap = align["clean"]["per_class"][k], align["perturbed"]["per_class"][k]
                iou = (
                    f" {ac['iou_median']:9.3f} {ap['iou_median']:9.3f} "
                    f"{100 * ac['share_outside_gt_10pct']:7.2f}%"
                )
            lines.append(f"{k:>5} {count:>6} {100 * (c or 0):7.2f}% {100 * (q or 0):8.2f}%{iou}  {name}")
    return "\n".join(lines)
