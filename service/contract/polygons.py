"""Polygon areas and clipping for crop quadrilaterals (NumPy only), shared by both sides of the contract.

The service reports how much of a crop lies outside the uploaded image (``transform.outside_fraction``), and
training measures how well a crop frames the annotated sign box (``metrics.alignment`` in the card). Both
clip the crop's quadrilateral against an axis-aligned box and compare shoelace areas, so the one
implementation lives here. Coordinates: x right, y down, pixel edges at integers.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def polygon_area(points: npt.ArrayLike) -> float:
    """Signed area of a simple polygon by the shoelace formula.

    Args:
        points: (K, 2) vertices (x, y) in order; K < 3 gives 0.

    Returns:
        The area, positive for vertices in clockwise order on screen (y pointing down), i.e. counter-clockwise
        in the usual y-up orientation.
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2).tolist()
    if len(p) < 3:
        return 0.0
    # Python floats: a crop quadrilateral has 4 to 8 vertices, where NumPy's per-call overhead dominates
    return 0.5 * math.fsum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(p, p[1:] + p[:1], strict=True))


def clip_to_box(points: npt.ArrayLike, box: tuple[float, float, float, float]) -> FloatArray:
    """The part of a convex polygon inside the box [x0, x1] x [y0, y1] (Sutherland-Hodgman).

    Clips the polygon against the box's four half-planes in turn; every intersection point is computed on the
    edge it lies on, so the result is exact up to floating-point rounding.

    Args:
        points: (K, 2) vertices (x, y) of a convex polygon, in order (either orientation).
        box: (x0, y0, x1, y1), x0 <= x1 and y0 <= y1.

    Returns:
        (M, 2) vertices of the clipped polygon in the same order, M = 0 when nothing is inside.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    polygon = [tuple(map(float, p)) for p in np.asarray(points, dtype=np.float64).reshape(-1, 2)]
    # each half-plane as (axis, bound, keep_below): keep x >= x0, x <= x1, y >= y0, y <= y1
    for axis, bound, below in ((0, x0, False), (0, x1, True), (1, y0, False), (1, y1, True)):
        if not polygon:
            break

        def inside(p: tuple[float, ...], axis: int = axis, bound: float = bound, below: bool = below) -> bool:
            return p[axis] <= bound if below else p[axis] >= bound

        clipped: list[tuple[float, ...]] = []
        for i, current in enumerate(polygon):
            previous = polygon[i - 1]
            if inside(current) != inside(previous):
                t = (bound - previous[axis]) / (current[axis] - previous[axis])
                crossing = [previous[k] + t * (current[k] - previous[k]) for k in (0, 1)]
                crossing[axis] = bound
                clipped.append(tuple(crossing))
            if inside(current):
                clipped.append(current)
        polygon = clipped
    return np.array(polygon, dtype=np.float64).reshape(-1, 2)
