"""How well the transformer's crop frames the annotated sign: figures (NumPy) and the supervised loss (torch).

Conventions (training/geometry.py): the crop is the canonical box [-1, 1]^2 mapped through the model's final
canonical warp; in 50x50-frame pixels (edges at integers, x right, y down) its quadrilateral is
``18 * M(corner) + 25`` for the corners top-left, top-right, bottom-right, bottom-left. GTSRB's annotated sign
box ``roi50 = (x0, y0, x1, y1)`` lives in the same frame. Under the evaluation's perturbation the image is not
moved (the perturbation is the initial warp), so the box stays where it is and the quadrilateral is the total
warp (perturbation composed with the transformer's correction).

Figures: IoU of quadrilateral and box, the mean distance of the four corners to the box's corners
(pixels), and the share of the crop's area lying outside the 50x50 frame (a crop that leaves the photo is
padded).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import numpy as np
import torch
import torch.nn.functional as F

from service.contract.polygons import clip_to_box, polygon_area
from training import geometry
from training.config import ALIGN_TARGETS
from training.errors import ConfigError, ShapeError

IOU_GOOD: Final = 0.7
"""IoU at or above which a crop counts as well aligned (``share_iou_ge_0_7``)."""
OUTSIDE_LIMIT: Final = 0.1
"""Share of a crop's area outside the frame above which the crop counts as padded."""
SMOOTH_L1_BETA: Final = 0.1
"""Huber transition of the alignment loss, canonical units (1.8 px): quadratic below, linear above."""


# ----------------------------------------------------------------------------------------------------------
# Figures (NumPy)
# ----------------------------------------------------------------------------------------------------------


def crop_quads(warps: np.ndarray) -> np.ndarray:
    """The crops' quadrilaterals in 50x50-frame pixels.

    Args:
        warps: (N, 3, 3) canonical warps (crop -> input, training/geometry.py).

    Returns:
        (N, 4, 2) float64 corners (x, y): top-left, top-right, bottom-right, bottom-left of the crop.
    """
    m = np.asarray(warps, dtype=np.float64)
    if m.ndim != 3 or m.shape[1:] != (3, 3):
        raise ShapeError(f"crop_quads: expected (N, 3, 3) warps, got {m.shape}")
    corners = np.array([[-1.0, -1.0, 1.0], [1.0, -1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, 1.0]])
    points = np.einsum("nij,kj->nki", m, corners)
    xy = points[..., :2] / points[..., 2:3]
    return xy * geometry.CANONICAL_UNIT_PX + geometry.FRAME_PX / 2


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) boxes (x0, y0, x1, y1) -> (N, 4, 2) corners in the order of :func:`crop_quads`."""
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ShapeError(f"box_corners: expected (N, 4) boxes, got {b.shape}")
    x0, y0, x1, y1 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    return np.stack(
        [np.stack([x0, y0], 1), np.stack([x1, y0], 1), np.stack([x1, y1], 1), np.stack([x0, y1], 1)], 1
    )


def quad_box_iou(quads: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of each quadrilateral with its axis-aligned box.

    Args:
        quads: (N, 4, 2) pixel corners (:func:`crop_quads`).
        boxes: (N, 4) boxes (x0, y0, x1, y1), same frame.

    Returns:
        (N,) IoU in [0, 1] (0 where both areas are 0).
    """
    q, b = np.asarray(quads, dtype=np.float64), np.asarray(boxes, dtype=np.float64)
    if q.ndim != 3 or q.shape[1:] != (4, 2) or b.shape != (q.shape[0], 4):
        raise ShapeError(f"quad_box_iou: expected (N, 4, 2) quads and (N, 4) boxes, got {q.shape}, {b.shape}")
    iou = np.zeros(q.shape[0])
    for i in range(q.shape[0]):
        box = (b[i, 0], b[i, 1], b[i, 2], b[i, 3])
        inter = abs(polygon_area(clip_to_box(q[i], box)))
        union = abs(polygon_area(q[i])) + (box[2] - box[0]) * (box[3] - box[1]) - inter
        iou[i] = inter / union if union > 0 else 0.0
    return iou


def outside_fraction(
    quads: np.ndarray, width: float = geometry.FRAME_PX, height: float | None = None
) -> np.ndarray:
    """Share of each quadrilateral's area lying outside the image [0, width] x [0, height].

    Args:
        quads: (N, 4, 2) corners in the image's pixels (edges at integers).
        width, height: the image's size (default: the 50x50 frame).

    Returns:
        (N,) fractions in [0, 1] (1 for a degenerate quadrilateral of zero area).
    """
    q = np.asarray(quads, dtype=np.float64)
    h = width if height is None else height
    frac = np.ones(q.shape[0])
    for i in range(q.shape[0]):
        area = abs(polygon_area(q[i]))
        if area > 0:
            frac[i] = max(0.0, 1.0 - abs(polygon_area(clip_to_box(q[i], (0.0, 0.0, width, h)))) / area)
    return frac


def mean_corner_distance(quads: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N,) mean Euclidean distance, in pixels, of each quadrilateral's corners to its box's corners."""
    return np.linalg.norm(np.asarray(quads, dtype=np.float64) - box_corners(boxes), axis=-1).mean(axis=1)


@dataclass
class AlignmentFigures:
    """Crop-alignment figures of one pass (clean or perturbed) over N images.

    Attributes:
        iou_median, iou_p5: median and 5th percentile of the IoU of the crop with the annotated box.
        share_iou_ge_0_7: share of images with IoU >= 0.7.
        mean_corner_px: mean distance of the crop's corners to the box's corners, 50x50-frame pixels.
        share_outside_gt_10pct: share of crops with more than 10% of their area outside the frame.
        per_class: per class id, ``{"iou_median", "share_outside_gt_10pct"}`` (None for a class without
            images).
    """

    iou_median: float
    iou_p5: float
    share_iou_ge_0_7: float
    mean_corner_px: float
    share_outside_gt_10pct: float
    per_class: list[dict[str, float] | None] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return asdict(self)


def alignment_figures(
    warps: np.ndarray, boxes: np.ndarray, labels: np.ndarray, num_classes: int
) -> AlignmentFigures:
    """:class:`AlignmentFigures` of the crops of ``warps`` against the annotated ``boxes``.

    Args:
        warps: (N, 3, 3) final canonical warps (total warp under a perturbation).
        boxes: (N, 4) annotated sign boxes in 50x50-frame pixels (``roi50``).
        labels: (N,) class ids, for the per-class figures.
        num_classes: K.
    """
    quads = crop_quads(warps)
    iou = quad_box_iou(quads, boxes)
    outside = outside_fraction(quads) > OUTSIDE_LIMIT
    corner = mean_corner_distance(quads, boxes)
    labels = np.asarray(labels)
    per_class: list[dict[str, float] | None] = []
    for k in range(num_classes):
        own = labels == k
        per_class.append(
            {"iou_median": float(np.median(iou[own])), "share_outside_gt_10pct": float(outside[own].mean())}
            if own.any()
            else None
        )
    if not len(iou):
        return AlignmentFigures(math.nan, math.nan, math.nan, math.nan, math.nan, per_class)
    return AlignmentFigures(
        iou_median=float(np.median(iou)),
        iou_p5=float(np.percentile(iou, 5)),
        share_iou_ge_0_7=float((iou >= IOU_GOOD).mean()),
        mean_corner_px=float(corner.mean()),
        share_outside_gt_10pct=float(outside.mean()),
        per_class=per_class,
    )


# ----------------------------------------------------------------------------------------------------------
# Supervised alignment loss (torch)
# ----------------------------------------------------------------------------------------------------------


def target_corners(roi50: torch.Tensor | None, target: str, margin_px: float, batch: int) -> torch.Tensor:
    """Canonical corners (B, 4, 2) the crop's corners are pulled towards.

    Args:
        roi50: (B, 4) annotated boxes (x0, y0, x1, y1), 50x50-frame pixels; needed for ``target="roi"``.
        target: ``"roi"``: the annotated box grown by ``margin_px`` on every side; ``"identity"``: the
            canonical box (the central 36x36 px), a prior that only undoes the input's perturbation.
        margin_px: margin added around the annotated box, pixels (may be negative).
        batch: B.

    Returns:
        (B, 4, 2) float32 canonical corners, top-left, top-right, bottom-right, bottom-left.
    """
    if target == "identity":
        return geometry.canonical_corners().expand(batch, 4, 2)
    if target != "roi":
        raise ConfigError(f"alignment target {target!r}: expected one of {', '.join(ALIGN_TARGETS)}")
    if roi50 is None or roi50.shape != (batch, 4):
        raise ShapeError(f"target_corners: expected (B, 4) roi50 boxes for B = {batch}")
    grow = torch.tensor([-margin_px, -margin_px, margin_px, margin_px], dtype=torch.float32)
    b = (roi50.float() + grow - geometry.FRAME_PX / 2) / geometry.CANONICAL_UNIT_PX
    x0, y0, x1, y1 = b.unbind(1)
    return torch.stack(
        [
            torch.stack([x0, y0], 1),
            torch.stack([x1, y0], 1),
            torch.stack([x1, y1], 1),
            torch.stack([x0, y1], 1),
        ],
        1,
    )


def warp_corners(warps: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) canonical warps -> (B, 4, 2) canonical positions of the crop's corners (differentiable)."""
    corners = geometry.canonical_corners(warps.dtype, warps.device)
    homogeneous = torch.cat([corners, torch.ones_like(corners[:, :1])], dim=1)  # (4, 3)
    points = torch.matmul(warps, homogeneous.t()).transpose(1, 2)  # (B, 4, 3)
    return points[..., :2] / points[..., 2:3]


def alignment_loss(warps: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Huber distance between the crop's corners and the target corners, canonical units, batch mean.

    Zero exactly when the crop maps onto the target; quadratic within ``SMOOTH_L1_BETA`` (1.8 px), linear
    beyond, so a badly perturbed early batch cannot dominate the classification loss.

    Args:
        warps: (B, 3, 3) final canonical warps.
        targets: (B, 4, 2) canonical target corners (:func:`target_corners`).

    Returns:
        () mean over batch, corners and axes.
    """
    return F.smooth_l1_loss(
        warp_corners(warps.float()), targets.to(warps.device).float(), beta=SMOOTH_L1_BETA
    )
