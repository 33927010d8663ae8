"""Warp geometry: parametrizations, composition, grids, frames, perturbations, on real GTSRB images."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.conventions import crop_size
from training.data import load_packed
from training.errors import ConfigError, ShapeError
from training.geometry import (
    FRAME_EXTENT,
    WARP_DIMS,
    WARP_TYPES,
    canonical_corners,
    compose,
    fit_homography,
    from_pixel_frame,
    invert,
    matrix_to_params,
    params_to_matrix,
    perturbation_warps,
    rotation_angle,
    rotation_warps,
    sampling_grid,
    to_pixel_frame,
    warp_images,
)


def _apply(m: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) warps applied to (B, K, 2) points, with the division by w."""
    h = torch.cat([pts, torch.ones_like(pts[..., :1])], dim=-1) @ m.transpose(1, 2)
    return h[..., :2] / h[..., 2:]


@pytest.fixture(scope="module")
def images(gtsrb_dir: Path) -> torch.Tensor:
    """8 real test images, (8, 3, 50, 50) float64 in 0..255."""
    split = load_packed(gtsrb_dir / "gtsrb50_test_lossless.npz", limit=8)
    return torch.from_numpy(split.images.copy()).permute(0, 3, 1, 2).to(torch.float64)


def test_crop_sizes() -> None:
    assert [crop_size(r) for r in (1, 2, 4, 8)] == [36, 18, 9, 5]


@pytest.mark.parametrize("warp_type", WARP_TYPES)
def test_params_round_trip(warp_type: str) -> None:
    g = torch.Generator().manual_seed(0)
    d = WARP_DIMS[warp_type]
    assert params_to_matrix(torch.zeros(3, d), warp_type).equal(torch.eye(3).expand(3, 3, 3))
    p = 0.2 * torch.randn(5, d, generator=g, dtype=torch.float64)
    m = params_to_matrix(p, warp_type)
    assert m.shape == (5, 3, 3)
    assert (m[:, 2, 2] == 1).all()
    torch.testing.assert_close(matrix_to_params(m, warp_type), p)
    # Composition stays inside the warp type (all four are groups), so its parameters round-trip too.
    mm = compose(m, m.flip(0))
    torch.testing.assert_close(params_to_matrix(matrix_to_params(mm, warp_type), warp_type), mm)


def test_similarity_is_scaled_rotation() -> None:
    p = torch.tensor([[0.1, 0.3, 0.0, 0.0]], dtype=torch.float64)
    m = params_to_matrix(p, "similarity")[0, :2, :2]
    torch.testing.assert_close(m @ m.T, (1.1**2 + 0.3**2) * torch.eye(2, dtype=torch.float64))


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="warp_type"):
        params_to_matrix(torch.zeros(1, 2), "perspective")
    with pytest.raises(ShapeError, match=r"expected \(B, 8\), got \(1, 6\)"):
        params_to_matrix(torch.zeros(1, 6), "homography")
    with pytest.raises(ShapeError, match=r"expected \(B, 3, 3\)"):
        invert(torch.eye(3))


def test_compose_with_inverse_is_identity() -> None:
    m = perturbation_warps(64, scale=0.3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64).expand(64, 3, 3)
    torch.testing.assert_close(compose(m, invert(m)), eye)
    torch.testing.assert_close(compose(invert(m), m), eye)
    torch.testing.assert_close(invert(m), torch.linalg.inv(m) / torch.linalg.inv(m)[:, 2:3, 2:3])


def test_compose_order() -> None:
    """compose(outer, inner) maps by inner first: IC-STN's p <- p o dp."""
    t = params_to_matrix(torch.tensor([[0.5, 0.0]], dtype=torch.float64), "translation")
    r = rotation_warps(torch.tensor([math.pi / 2], dtype=torch.float64))
    x = torch.tensor([[[1.0, 0.0]]], dtype=torch.float64)
    torch.testing.assert_close(_apply(compose(t, r), x), _apply(t, _apply(r, x)))
    torch.testing.assert_close(_apply(compose(t, r), x), torch.tensor([[[0.5, 1.0]]], dtype=torch.float64))


def test_sampling_grid_identity_is_affine_grid_of_central_box() -> None:
    for size in (36, 18, 9, 5):
        grid = sampling_grid(torch.eye(3).expand(2, 3, 3), size)
        theta = torch.tensor([[18 / 25, 0.0, 0.0], [0.0, 18 / 25, 0.0]]).expand(2, 2, 3)
        expected = F.affine_grid(theta, [2, 3, size, size], align_corners=False)
        torch.testing.assert_close(grid, expected)
    whole = sampling_grid(torch.eye(3)[None], 50, extent=FRAME_EXTENT)
    expected = F.affine_grid(torch.eye(2, 3)[None], [1, 3, 50, 50], align_corners=False)
    torch.testing.assert_close(whole, expected)


def test_identity_crop_is_the_central_box(images: torch.Tensor) -> None:
    crops = warp_images(images, torch.eye(3, dtype=torch.float64).expand(8, 3, 3), 36)
    torch.testing.assert_close(crops, images[:, :, 7:43, 7:43])
    frame = warp_images(images, torch.eye(3, dtype=torch.float64).expand(8, 3, 3), 50, extent=FRAME_EXTENT)
    torch.testing.assert_close(frame, images)


@pytest.mark.parametrize(("dx_px", "dy_px"), [(3, 0), (0, -5), (4, 2)])
def test_translation_moves_real_image_by_pixels(images: torch.Tensor, dx_px: int, dy_px: int) -> None:
    """A translation warp of (dx, dy) px samples the crop dx px right and dy px down in the input."""
    p = torch.tensor([[dx_px / 18, dy_px / 18]], dtype=torch.float64).expand(8, 2)
    crops = warp_images(images, params_to_matrix(p, "translation"), 36)
    torch.testing.assert_close(crops, images[:, :, 7 + dy_px : 43 + dy_px, 7 + dx_px : 43 + dx_px])
    # And a sub-pixel shift is the bilinear mix of its two integer neighbours.
    half = params_to_matrix(torch.tensor([[0.5 / 18, 0.0]], dtype=torch.float64).expand(8, 2), "translation")
    mixed = (images[:, :, 7:43, 7:43] + images[:, :, 7:43, 8:44]) / 2
    torch.testing.assert_close(warp_images(images, half, 36), mixed)


def test_rotation_by_quarter_turn_on_real_image(images: torch.Tensor) -> None:
    box = images[:, :, 7:43, 7:43]
    rotated = warp_images(images, rotation_warps(torch.full((8,), math.pi / 2, dtype=torch.float64)), 36)
    # Output (x, y) samples input (-y, x): the output is the box turned counter-clockwise on screen.
    torch.testing.assert_close(rotated, torch.rot90(box, k=1, dims=(2, 3)), atol=1e-9, rtol=0)
    angles = torch.linspace(-3.0, 3.0, 7, dtype=torch.float64)
    torch.testing.assert_close(rotation_angle(rotation_warps(angles)), angles)


def test_pixel_frame_maps_canonical_corners() -> None:
    m = to_pixel_frame(torch.eye(3).expand(1, 3, 3))
    torch.testing.assert_close(m, torch.eye(3)[None])
    corners_can = canonical_corners(torch.float64)[None]
    warp = perturbation_warps(4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    m_pix = to_pixel_frame(warp)
    box = torch.tensor([[[7.0, 7.0], [43.0, 7.0], [43.0, 43.0], [7.0, 43.0]]], dtype=torch.float64)
    # The pixel-frame warp maps the box corners where the canonical warp maps the canonical corners.
    torch.testing.assert_close(
        _apply(m_pix, box.expand(4, 4, 2)), _apply(warp, corners_can.expand(4, 4, 2)) * 18 + 25
    )
    torch.testing.assert_close(_apply(to_pixel_frame(torch.eye(3, dtype=torch.float64)[None]), box), box)
    torch.testing.assert_close(from_pixel_frame(m_pix), warp)


def test_perturbation_identity_at_scale_zero() -> None:
    m = perturbation_warps(5, scale=0.0, translation_scale=0.0, dtype=torch.float64)
    assert m.equal(torch.eye(3, dtype=torch.float64).expand(5, 3, 3))
    # A near-zero perturbation is near the identity (the fit itself is exact).
    tiny = perturbation_warps(
        5, scale=1e-9, translation_scale=1e-9, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(tiny, torch.eye(3).expand(5, 3, 3))


def test_perturbation_corner_statistics() -> None:
    n = 20000
    m = perturbation_warps(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    corners = canonical_corners(torch.float64).expand(n, 4, 2)
    moved = _apply(m, corners)  # the homography maps canonical corners exactly to the moved corners
    disp = (moved - corners).reshape(n, 8).numpy()
    assert np.abs(disp.mean(axis=0)).max() < 0.01
    np.testing.assert_allclose(disp.std(axis=0), math.sqrt(0.25**2 + 0.25**2), rtol=0.03)
    corr = np.corrcoef(disp.T)
    xs, ys = corr[0::2, 0::2], corr[1::2, 1::2]
    off = ~np.eye(4, dtype=bool)
    np.testing.assert_allclose(xs[off], 0.5, atol=0.03)  # shared translation: 0.25^2 / (0.25^2 + 0.25^2)
    np.testing.assert_allclose(ys[off], 0.5, atol=0.03)
    assert np.abs(corr[0::2, 1::2]).max() < 0.03  # x and y independent


def test_perturbation_scales_and_reproducibility() -> None:
    n = 20000
    m = perturbation_warps(n, scale=0.1, translation_scale=0.0, generator=torch.Generator().manual_seed(5))
    corners = canonical_corners().expand(n, 4, 2)
    disp = (_apply(m.double(), corners.double()) - corners).reshape(n, 8).numpy()
    np.testing.assert_allclose(disp.std(axis=0), 0.1, rtol=0.03)
    assert np.abs(np.corrcoef(disp.T)[0, 2]) < 0.03
    a = perturbation_warps(3, generator=torch.Generator().manual_seed(9))
    b = perturbation_warps(3, generator=torch.Generator().manual_seed(9))
    assert a.equal(b)
    assert a.dtype == torch.float32
    with pytest.raises(ConfigError):
        perturbation_warps(3, scale=-1.0)


def test_fit_homography_matches_known_homography() -> None:
    h = params_to_matrix(torch.tensor([[0.1, -0.2, 0.3, 0.05, -0.1, 0.2, 0.1, -0.05]]), "homography")
    src = torch.tensor([[[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]])
    torch.testing.assert_close(fit_homography(src, _apply(h, src)), h)
    with pytest.raises(ShapeError):
        fit_homography(src[:, :3], src[:, :3])


def test_sampling_grid_exports_to_onnx(tmp_path: Path, images: torch.Tensor) -> None:
    import onnxruntime as ort

    class Warp(torch.nn.Module):
        def forward(self, image: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            m = compose(params_to_matrix(params, "homography"), invert(rotation_warps(params[:, 0])))
            grid = sampling_grid(m, 18)
            return F.grid_sample(image, grid, mode="bilinear", align_corners=False), to_pixel_frame(m)

    x = images[:2].float()
    p = 0.05 * torch.randn(2, 8, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "warp.onnx"
    torch.onnx.export(
        Warp(), (x, p), str(path), opset_version=17, dynamo=False,
        input_names=["image", "params"], output_names=["crop", "warp"],
        dynamic_axes={"image": {0: "n"}, "params": {0: "n"}, "crop": {0: "n"}, "warp": {0: "n"}},
    )  # fmt: skip
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x3 = images[:3].float()
    p3 = 0.05 * torch.randn(3, 8, generator=torch.Generator().manual_seed(1))
    crop, warp = sess.run(None, {"image": x3.numpy(), "params": p3.numpy()})
    ref_crop, ref_warp = Warp()(x3, p3)
    np.testing.assert_allclose(crop, ref_crop.numpy(), atol=1e-3)
    np.testing.assert_allclose(warp, ref_warp.numpy(), atol=1e-5)
