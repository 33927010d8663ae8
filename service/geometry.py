"""Warp geometry for the service: from the network's 50x50 frame to the uploaded image's pixels (numpy only).

Convention (docs/model-bundle.md): pixel coordinates are x right, y down, with pixel *edges* at integers, so
pixel (row i, column j) has its centre at (j + 0.5, i + 0.5). A warp is a 3x3 matrix acting on homogeneous
column vectors ``[x, y, 1]^T`` and maps *output* (crop) coordinates to *input* coordinates (inverse
mapping, as grid_sample and Pillow's ``Image.transform`` use). The network's ``warp`` output maps the
canonical crop box's frame coordinates (a point inside ``box``) to network-frame coordinates; names below
read ``dst_from_src``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service.contract.polygons import clip_to_box, polygon_area

Box = tuple[float, float, float, float]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class CropTransform:
    """The predicted transform of one image, in the uploaded image's pixel coordinates.

    Attributes:
        image_from_crop: (3, 3) maps crop pixel coordinates (edges at integers, [0, S] a side) to input image
            pixel coordinates, normalised so that ``[2, 2] == 1``.
        corners: (4, 2) the crop's corners (top-left, top-right, bottom-right, bottom-left) in input pixels.
        scale: local scale at the crop centre, sqrt(|det J|) of the network warp's Jacobian; 1.0 means the
            canonical box's size, > 1 a larger region of the image (zoomed out).
        rotation_deg: rotation of the closest similarity transform at the crop centre, in degrees; positive
            turns the crop's x axis from +x towards +y (clockwise on screen, y pointing down).
        outside_fraction: share of the crop's area (the quadrilateral ``corners``) lying outside the image
            rectangle [0, W] x [0, H], in [0, 1] (see :func:`outside_fraction`).
    """

    image_from_crop: FloatArray
    corners: FloatArray
    scale: float
    rotation_deg: float
    outside_fraction: float = 0.0


def canonical_from_crop(box: Box, crop_size: int) -> FloatArray:
    """(3, 3) matrix mapping S x S crop pixel coordinates to canonical-frame coordinates of ``box``.

    Crop pixel (u, v) has its centre at ``(x0 + (x1 - x0) (u + 0.5) / S, y0 + (y1 - y0) (v + 0.5) / S)``.

    Args:
        box: (x0, y0, x1, y1) the canonical crop in network-frame pixels, e.g. (7, 7, 43, 43).
        crop_size: S, pixels a side of the rendered crop (> 0).
    """
    if crop_size <= 0:
        raise ValueError(f"crop_size must be positive, got {crop_size}")
    x0, y0, x1, y1 = box
    return np.array(
        [[(x1 - x0) / crop_size, 0.0, x0], [0.0, (y1 - y0) / crop_size, y0], [0.0, 0.0, 1.0]],
        dtype=np.float64,
    )


def image_from_frame(frame: tuple[int, int], image_size: tuple[int, int]) -> FloatArray:
    """(3, 3) ``diag(W / fw, H / fh, 1)``: network-frame pixels (fw x fh) to uploaded-image pixels (W x H)."""
    (fw, fh), (width, height) = frame, image_size
    return np.diag([width / fw, height / fh, 1.0]).astype(np.float64)


def local_scale_rotation(warp: npt.ArrayLike, box: Box) -> tuple[float, float]:
    """Scale and rotation (degrees) of ``warp`` at the centre of the canonical ``box``, in the network frame.

    For an affine warp ``[[A, t], [0, 1]]`` the Jacobian J is A everywhere; for a homography it is taken at
    the box centre. ``scale = sqrt(|det J|)`` (identity: 1.0) and
    ``rotation = atan2(J10 - J01, J00 + J11)``, the angle of the similarity transform closest to J
    (identity: 0.0; positive turns +x towards +y). Computed on Python floats: for one 3x3 matrix that is
    several times faster than NumPy's small-array calls, and this runs once per classified image.

    Args:
        warp: (3, 3) network-frame warp, canonical crop coordinates -> input frame coordinates.
        box: (x0, y0, x1, y1) the canonical crop box.
    """
    (a, b, c), (d, e, f), (g, h, i) = np.asarray(warp, dtype=np.float64).reshape(3, 3).tolist()
    cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
    w = g * cx + h * cy + i
    mx, my = (a * cx + b * cy + c) / w, (d * cx + e * cy + f) / w
    j00, j01, j10, j11 = (a - mx * g) / w, (b - mx * h) / w, (d - my * g) / w, (e - my * h) / w
    scale = math.sqrt(abs(j00 * j11 - j01 * j10))
    rotation = math.degrees(math.atan2(j10 - j01, j00 + j11))
    return scale, rotation


def clip_to_rectangle(points: npt.ArrayLike, width: float, height: float) -> FloatArray:
    """The part of a convex polygon inside the image rectangle [0, width] x [0, height]
    (:func:`service.contract.polygons.clip_to_box`); (K, 2) vertices in, (M, 2) out, M = 0 when none."""
    return clip_to_box(points, (0.0, 0.0, width, height))


def outside_fraction(corners: npt.ArrayLike, image_size: tuple[int, int]) -> float:
    """Share of a crop's area that lies outside the image: ``1 - area(crop ∩ image) / area(crop)``.

    The crop is the quadrilateral of its four ``corners`` in the image's pixels (x right, y down, pixel edges
    at integers), the image is the rectangle [0, W] x [0, H]. A homography whose homogeneous coordinate is
    positive at all four corners maps the square crop to a convex quadrilateral, so clipping it against the
    rectangle (:func:`clip_to_rectangle`) and taking shoelace areas (:func:`polygon_area`) is exact. The
    rendered crop is black (padding) where it lies outside; under perspective the share is one of areas in
    the image, not of the crop's pixels.

    Args:
        corners: (4, 2) the crop's corners (top-left, top-right, bottom-right, bottom-left), image pixels.
        image_size: (W, H) of the image.

    Returns:
        A value in [0, 1]: 0 when the crop lies inside the image, 1 when it lies wholly outside. A crop of
        zero area counts as 0 when its corners all lie in the image, else 1.
    """
    width, height = image_size
    quad = np.asarray(corners, dtype=np.float64).reshape(-1, 2)
    if all(0.0 <= x <= width and 0.0 <= y <= height for x, y in quad.tolist()):
        return 0.0  # a convex crop whose corners all lie in the image lies wholly inside it
    total = abs(polygon_area(quad))
    if not math.isfinite(total) or total <= 0.0:
        return 1.0  # degenerate, and some corner lies outside
    kept = abs(polygon_area(clip_to_rectangle(quad, width, height)))
    return min(1.0, max(0.0, 1.0 - kept / total))


def crop_transform(
    warp: npt.ArrayLike,
    *,
    image_size: tuple[int, int],
    crop_size: int,
    frame: tuple[int, int],
    box: Box,
) -> CropTransform | None:
    """The transform of one prediction mapped to the uploaded image, or None when it is degenerate.

    ``image_from_crop = diag(W / fw, H / fh, 1) @ warp @ canonical_from_crop(box, S)``. A warp is degenerate
    when a value is not finite or the homogeneous coordinate is not positive at a crop corner (the crop would
    wrap through infinity); the service then reports no transform and no crop. ``outside_fraction`` is the
    share of the crop's area outside the image (:func:`outside_fraction`).

    Args:
        warp: (3, 3) the network's ``warp`` output for this image (network frame, canonical -> input).
        image_size: (W, H) of the uploaded image after EXIF orientation.
        crop_size: S, pixels a side of the rendered crop.
        frame: (fw, fh) the network frame, (50, 50).
        box: (x0, y0, x1, y1) the canonical crop box in the network frame, (7, 7, 43, 43).
    """
    h = np.asarray(warp, dtype=np.float64)
    if h.shape != (3, 3):
        return None
    (a, b, c), (d, e, f), (g, k, m) = rows = h.tolist()
    if not all(math.isfinite(v) for row in rows for v in row):
        return None
    # full = diag(W / fw, H / fh, 1) @ warp @ canonical_from_crop(box, S) on Python floats (one 3x3 an image)
    (fw, fh), (width, height) = frame, image_size
    sx, sy = width / fw, height / fh
    x0, y0, x1, y1 = box
    s = float(crop_size)
    kx, ky = (x1 - x0) / s, (y1 - y0) / s
    full = [
        [sx * a * kx, sx * b * ky, sx * (a * x0 + b * y0 + c)],
        [sy * d * kx, sy * e * ky, sy * (d * x0 + e * y0 + f)],
        [g * kx, k * ky, g * x0 + k * y0 + m],
    ]
    crop_corners = ((0.0, 0.0), (s, 0.0), (s, s), (0.0, s))
    (p, q, r), (t, u, v), (gx, gy, gz) = full
    weights = [gx * x + gy * y + gz for x, y in crop_corners]
    if not all(w > 1e-9 for w in weights) or abs(gz) < 1e-12:
        return None
    full = [[value / gz for value in row] for row in full]
    corners = [
        [(p * x + q * y + r) / w, (t * x + u * y + v) / w]
        for (x, y), w in zip(crop_corners, weights, strict=True)
    ]
    scale, rotation = local_scale_rotation(h, box)
    if not all(math.isfinite(v) for row in (*full, *corners) for v in row):
        return None
    if not (math.isfinite(scale) and math.isfinite(rotation)):
        return None
    return CropTransform(
        image_from_crop=np.array(full, dtype=np.float64),
        corners=np.array(corners, dtype=np.float64),
        scale=scale,
        rotation_deg=rotation,
        outside_fraction=outside_fraction(corners, image_size),
    )
