"""``outside_fraction``: the share of a crop's area outside the uploaded image, against areas computed by
hand."""

from __future__ import annotations

import numpy as np
import pytest

from service.geometry import clip_to_rectangle, crop_transform, outside_fraction, polygon_area

BOX = (7.0, 7.0, 43.0, 43.0)


def translation(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def fraction_of_warp(warp: np.ndarray, image_size: tuple[int, int] = (50, 50), crop_size: int = 36) -> float:
    t = crop_transform(warp, image_size=image_size, crop_size=crop_size, frame=(50, 50), box=BOX)
    assert t is not None
    return t.outside_fraction


def test_shoelace_area_and_orientation() -> None:
    square = [[0, 0], [4, 0], [4, 3], [0, 3]]  # clockwise on screen (y down)
    assert polygon_area(square) == 12.0
    assert polygon_area(square[::-1]) == -12.0
    assert polygon_area([[0, 0], [1, 1]]) == 0.0


def test_identity_warp_lies_inside() -> None:
    """The canonical box (7..43 of 50) scaled to any image lies inside it: nothing outside."""
    assert fraction_of_warp(np.eye(3)) == 0.0
    assert fraction_of_warp(np.eye(3), image_size=(105, 91), crop_size=128) == 0.0


def test_a_crop_touching_the_image_edge_lies_inside() -> None:
    # box x 7..43 shifted by 7: 14..50, its right edge on the image's
    assert fraction_of_warp(translation(7.0, 0.0)) == 0.0


def test_half_outside() -> None:
    """Shifted right by 25 the 36-wide box covers x 32..68 of a 50-wide image: 18 of its 36 columns."""
    assert fraction_of_warp(translation(25.0, 0.0)) == pytest.approx(0.5, abs=1e-12)
    assert fraction_of_warp(translation(0.0, -25.0)) == pytest.approx(0.5, abs=1e-12)  # y 0..18 of -18..18


def test_three_quarters_outside() -> None:
    """Shifted by 25 in x and y, only the 18 x 18 top-left quarter stays in the image."""
    assert fraction_of_warp(translation(25.0, 25.0)) == pytest.approx(0.75, abs=1e-12)


def test_wholly_outside() -> None:
    assert fraction_of_warp(translation(60.0, 0.0)) == 1.0


def test_the_image_size_scales_the_crop() -> None:
    """The frame's warp is scaled to the image: the same shift gives the same share on a 100 x 30 image."""
    assert fraction_of_warp(translation(25.0, 0.0), image_size=(100, 30), crop_size=64) == pytest.approx(0.5)


def test_diamond_loses_its_four_tips() -> None:
    """A square turned 45 degrees, diagonals 60 long centred in a 50 x 50 image: area 60 * 60 / 2 = 1800.

    Each tip reaches 5 pixels past an edge: a triangle of height 5 and base 10 (area 25) outside, four of
    them: 100 / 1800 = 1/18.
    """
    diamond = [[25, -5], [55, 25], [25, 55], [-5, 25]]
    assert outside_fraction(diamond, (50, 50)) == pytest.approx(1 / 18, abs=1e-12)
    assert outside_fraction(diamond[::-1], (50, 50)) == pytest.approx(1 / 18, abs=1e-12)


def test_diamond_through_an_affine_warp() -> None:
    """The same diamond as the network's warp of the canonical box (45 degrees, scale 30 sqrt(2) / 36)."""
    k = 30.0 / 36.0  # (cos 45, sin 45) times the scale, per unit of box side
    linear = np.array([[k, -k], [k, k]])
    shift = np.array([25.0, -5.0]) - linear @ np.array([7.0, 7.0])  # box corner (7, 7) -> (25, -5)
    warp = np.eye(3)
    warp[:2, :2], warp[:2, 2] = linear, shift
    t = crop_transform(warp, image_size=(50, 50), crop_size=36, frame=(50, 50), box=BOX)
    assert t is not None
    np.testing.assert_allclose(t.corners, [[25, -5], [55, 25], [25, 55], [-5, 25]], atol=1e-9)
    assert t.outside_fraction == pytest.approx(1 / 18, abs=1e-12)


def test_clipping_keeps_the_inside_polygon() -> None:
    clipped = clip_to_rectangle([[-10, -10], [10, -10], [10, 10], [-10, 10]], 50, 50)
    assert abs(polygon_area(clipped)) == pytest.approx(100.0)
    assert clip_to_rectangle([[60, 0], [70, 0], [70, 10], [60, 10]], 50, 50).shape == (0, 2)


def test_perspective_crops_match_dense_sampling() -> None:
    """Random homographies: the exact share against counting grid points inside the quadrilateral."""
    rng = np.random.default_rng(7)
    step = 0.25
    for _ in range(20):
        warp = np.eye(3)
        warp[:2, :2] += rng.normal(0, 0.25, (2, 2))
        warp[:2, 2] = rng.normal(0, 12, 2)
        warp[2, :2] = rng.normal(0, 0.004, 2)
        t = crop_transform(warp, image_size=(60, 40), crop_size=36, frame=(50, 50), box=BOX)
        if t is None:
            continue
        quad = t.corners
        lo, hi = quad.min(axis=0) - 1, quad.max(axis=0) + 1
        xs, ys = np.meshgrid(np.arange(lo[0], hi[0], step), np.arange(lo[1], hi[1], step))
        points = np.stack([xs.ravel(), ys.ravel()], axis=1)
        inside_quad = np.ones(len(points), dtype=bool)
        sign = np.sign(polygon_area(quad))
        for a, b in zip(quad, np.roll(quad, -1, axis=0), strict=True):
            cross = (b[0] - a[0]) * (points[:, 1] - a[1]) - (b[1] - a[1]) * (points[:, 0] - a[0])
            inside_quad &= sign * cross >= 0
        in_image = (points[:, 0] >= 0) & (points[:, 0] <= 60) & (points[:, 1] >= 0) & (points[:, 1] <= 40)
        estimate = 1.0 - (inside_quad & in_image).sum() / inside_quad.sum()
        assert t.outside_fraction == pytest.approx(estimate, abs=0.01)
        assert 0.0 <= t.outside_fraction <= 1.0


def test_degenerate_quadrilateral() -> None:
    assert outside_fraction([[1, 1], [2, 2], [3, 3], [4, 4]], (50, 50)) == 0.0
    assert outside_fraction([[1, 1], [2, 2], [3, 3], [60, 60]], (50, 50)) == 1.0


def test_crop_transform_equals_the_matrix_composition_for_random_perspective_warps() -> None:
    """The Python-float fast path of ``crop_transform`` against the documented composition
    ``diag(W/fw, H/fh, 1) @ warp @ canonical_from_crop(box, S)`` and NumPy's Jacobian at the box centre."""
    from service.geometry import canonical_from_crop, image_from_frame

    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(200):
        warp = np.eye(3) + rng.normal(scale=[[0.2, 0.2, 3.0], [0.2, 0.2, 3.0], [0.003, 0.003, 0.0]])
        size = (int(rng.integers(20, 400)), int(rng.integers(20, 400)))
        t = crop_transform(warp, image_size=size, crop_size=64, frame=(50, 50), box=BOX)
        full = image_from_frame((50, 50), size) @ warp @ canonical_from_crop(BOX, 64)
        corners_h = np.array([[0, 0, 1], [64, 0, 1], [64, 64, 1], [0, 64, 1]], dtype=float) @ full.T
        if t is None:
            assert np.any(corners_h[:, 2] <= 1e-9)
            continue
        checked += 1
        np.testing.assert_allclose(t.image_from_crop, full / full[2, 2], rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(t.corners, corners_h[:, :2] / corners_h[:, 2:], rtol=1e-12, atol=1e-9)
        centre = np.array([25.0, 25.0, 1.0])
        w = warp[2] @ centre
        mapped = (warp[:2] @ centre) / w
        jac = (warp[:2, :2] - np.outer(mapped, warp[2, :2])) / w
        assert t.scale == pytest.approx(np.sqrt(abs(np.linalg.det(jac))), rel=1e-12)
        rotation = np.degrees(np.arctan2(jac[1, 0] - jac[0, 1], jac[0, 0] + jac[1, 1]))
        assert t.rotation_deg == pytest.approx(rotation, rel=1e-12, abs=1e-12)
    assert checked > 150
