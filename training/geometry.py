"""Warp geometry: parametrizations, composition, inverse, sampling grids, and the IC-STN perturbations.

Conventions
-----------
* **Frames.** The network input is the whole image resized to 50x50. Pixel coordinates put pixel *edges* at
  integers (pixel (i, j) has its centre at (j + 0.5, i + 0.5)); x right, y down; the frame spans [0, 50].
* **Canonical coordinates** put the canonical crop box, pixels [7, 43]^2 of the 50x50 frame (the central 36x36
  box of IC-STN), at [-1, 1]^2: ``x_pix = 18 * x_can + 25``, so one canonical unit is 18 px, x right, y down,
  and the whole 50x50 frame spans [-25/18, 25/18]^2.
* **Warps** are (B, 3, 3) matrices ``M`` that map homogeneous canonical OUTPUT coordinates (a point of the
  crop) to canonical INPUT coordinates (where it is sampled from):
  ``[x_in, y_in, w] = M @ [x_out, y_out, 1]``, then divide by ``w``. This is the inverse mapping grid_sample
  wants. Matrices are normalized so that ``M[:, 2, 2] == 1``; the identity samples the canonical box itself.
* **Parameters** follow IC-STN (zero parameters = identity):
  translation ``[[1, 0, p1], [0, 1, p2]]``; similarity ``[[1+p1, -p2, p3], [p2, 1+p1, p4]]``;
  affine ``I + [[p1, p2, p3], [p4, p5, p6]]``; homography ``I + [[p1, p2, p3], [p4, p5, p6], [p7, p8, 0]]``.
* **Composition.** ``compose(outer, inner) = outer @ inner``: the result first maps output coordinates by
  ``inner``, then by ``outer``. IC-STN's update ``p <- p o dp`` is ``compose(M_p, M_dp)``.
* **Sampling grids** are in grid_sample's normalized coordinates with ``align_corners=False``: -1 and +1 are
  the outer edges of the 50x50 frame, so ``x_norm = x_can * 18 / 25``. Output pixel (u, v) of an S x S crop
  has its centre at canonical ``(-1 + 2 (u + 0.5) / S, -1 + 2 (v + 0.5) / S)``.
* **Bundles** report warps in the 50x50 pixel frame (docs/model-bundle.md): ``to_pixel_frame(M) = S M S^-1``
  with ``S = canonical_to_pixel()``.

One file on purpose (about 440 lines): the warp conventions above and all the maths that depends on them
stay side by side, so a change to one is made next to the others (the constants live in
:mod:`training.conventions`).

Everything here is torch only; the functions used inside models (``params_to_matrix``, ``compose``,
``invert``, ``sampling_grid``, ``to_pixel_frame``) use matmul and elementwise operations only, so they export
to ONNX.
"""

from __future__ import annotations

from typing import Final

import torch
import torch.nn.functional as F

from training.conventions import (
    CANONICAL_UNIT_PX,
    CROP_BOX,
    FRAME_EXTENT,
    FRAME_SIZE,
    WARP_DIMS,
    WARP_TYPES,
)
from training.errors import ConfigError, ShapeError, TrainingError

FRAME_PX: Final = FRAME_SIZE
"""Side of the network's input frame in pixels (:data:`training.conventions.FRAME_SIZE`)."""
CROP_BOX_PX: Final = CROP_BOX
"""The canonical crop box in frame pixels (:data:`training.conventions.CROP_BOX`)."""


def _tracing() -> bool:
    """True while torch.jit / ONNX export traces: shape checks would be recorded as warnings, so skip them."""
    return torch.jit.is_tracing()


def _check_matrix(m: torch.Tensor, name: str) -> None:
    if _tracing():
        return
    if m.ndim != 3 or m.shape[1:] != (3, 3):
        raise ShapeError(f"{name}: expected (B, 3, 3), got {tuple(m.shape)}")


def _check_warp_type(warp_type: str) -> None:
    if warp_type not in WARP_DIMS:
        raise ConfigError(f"warp_type: expected one of {', '.join(WARP_TYPES)}, got {warp_type!r}")


def normalize(m: torch.Tensor) -> torch.Tensor:
    """Scale each (3, 3) matrix of ``m`` (B, 3, 3) so that ``m[:, 2, 2] == 1`` (same projective map)."""
    _check_matrix(m, "normalize")
    return m / m[:, 2:3, 2:3]


def params_to_matrix(params: torch.Tensor, warp_type: str) -> torch.Tensor:
    """Warp matrices from IC-STN parameters (zero parameters give the identity).

    Args:
        params: (B, d) with d = ``WARP_DIMS[warp_type]``, canonical units.
        warp_type: one of :data:`WARP_TYPES`.

    Returns:
        (B, 3, 3) matrices, canonical output -> canonical input, ``M[:, 2, 2] == 1``.
    """
    _check_warp_type(warp_type)
    d = WARP_DIMS[warp_type]
    if not _tracing() and (params.ndim != 2 or params.shape[1] != d):
        raise ShapeError(f"params_to_matrix({warp_type}): expected (B, {d}), got {tuple(params.shape)}")
    p = params.unbind(dim=1)
    one = torch.ones_like(p[0])
    zero = torch.zeros_like(p[0])
    if warp_type == "translation":
        entries = [one, zero, p[0], zero, one, p[1], zero, zero, one]
    elif warp_type == "similarity":
        entries = [one + p[0], -p[1], p[2], p[1], one + p[0], p[3], zero, zero, one]
    elif warp_type == "affine":
        entries = [one + p[0], p[1], p[2], p[3], one + p[4], p[5], zero, zero, one]
    else:
        entries = [one + p[0], p[1], p[2], p[3], one + p[4], p[5], p[6], p[7], one]
    return torch.stack(entries, dim=1).reshape(-1, 3, 3)


def matrix_to_params(m: torch.Tensor, warp_type: str) -> torch.Tensor:
    """IC-STN parameters of warp matrices (the inverse of :func:`params_to_matrix`).

    Exact for matrices of that warp type. For other matrices it is a projection: ``m`` is first normalized to
    ``m[:, 2, 2] == 1``; affine and translation drop the entries they lack; similarity takes the least-squares
    nearest scaled rotation of the 2x2 block.

    Args:
        m: (B, 3, 3) warps.
        warp_type: one of :data:`WARP_TYPES`.

    Returns:
        (B, d) parameters, d = ``WARP_DIMS[warp_type]``.
    """
    _check_warp_type(warp_type)
    m = normalize(m)
    a, b, c = m[:, 0, 0], m[:, 0, 1], m[:, 0, 2]
    d, e, f = m[:, 1, 0], m[:, 1, 1], m[:, 1, 2]
    if warp_type == "translation":
        cols = [c, f]
    elif warp_type == "similarity":
        cols = [(a + e) / 2 - 1, (d - b) / 2, c, f]
    elif warp_type == "affine":
        cols = [a - 1, b, c, d, e - 1, f]
    else:
        cols = [a - 1, b, c, d, e - 1, f, m[:, 2, 0], m[:, 2, 1]]
    return torch.stack(cols, dim=1)


def compose(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """``outer @ inner``, normalized: first map output coordinates by ``inner``, then by ``outer``.

    Args:
        outer: (B, 3, 3) or (1, 3, 3) warps.
        inner: (B, 3, 3) or (1, 3, 3) warps.

    Returns:
        (B, 3, 3), ``[:, 2, 2] == 1``.
    """
    _check_matrix(outer, "compose(outer)")
    _check_matrix(inner, "compose(inner)")
    return normalize(torch.matmul(outer, inner))


def invert(m: torch.Tensor) -> torch.Tensor:
    """The inverse warps, normalized to ``[:, 2, 2] == 1``.

    Computed from the adjugate (elementwise operations only, exportable to ONNX); the determinant cancels in
    the normalization. Undefined when ``m[0,0] m[1,1] - m[0,1] m[1,0] == 0`` (the inverse maps the origin to
    infinity), which no usable warp does.

    Args:
        m: (B, 3, 3) warps.

    Returns:
        (B, 3, 3) with ``compose(m, invert(m)) == I``.
    """
    _check_matrix(m, "invert")
    a, b, c = m[:, 0, 0], m[:, 0, 1], m[:, 0, 2]
    d, e, f = m[:, 1, 0], m[:, 1, 1], m[:, 1, 2]
    g, h, i = m[:, 2, 0], m[:, 2, 1], m[:, 2, 2]
    adj = [
        e * i - f * h, c * h - b * i, b * f - c * e,
        f * g - d * i, a * i - c * g, c * d - a * f,
        d * h - e * g, b * g - a * h, a * e - b * d,
    ]  # fmt: skip
    return normalize(torch.stack(adj, dim=1).reshape(-1, 3, 3))


def canonical_to_pixel(
    dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """(3, 3) matrix S with ``x_pix = 18 x_can + 25`` (50x50 frame, pixel edges at integers), y likewise."""
    u, half = float(CANONICAL_UNIT_PX), FRAME_PX / 2
    return torch.tensor([[u, 0.0, half], [0.0, u, half], [0.0, 0.0, 1.0]], dtype=dtype, device=device)


def to_pixel_frame(m_can: torch.Tensor) -> torch.Tensor:
    """Canonical warps -> warps in 50x50-frame pixel coordinates (the bundle's ``warp`` output).

    ``S @ m_can @ S^-1`` normalized to ``[:, 2, 2] == 1``: it maps a point of the canonical crop, in frame
    pixels (the identity's crop is the box [7, 43]^2), to the frame pixel it is sampled from.

    Args:
        m_can: (B, 3, 3) canonical warps.

    Returns:
        (B, 3, 3) pixel-frame warps.
    """
    _check_matrix(m_can, "to_pixel_frame")
    u, k = float(CANONICAL_UNIT_PX), FRAME_PX / 2
    # Elementwise form of S @ m @ S^-1 (no constant tensors, so it traces and exports cleanly).
    sm = torch.cat([u * m_can[:, :2, :] + k * m_can[:, 2:3, :], m_can[:, 2:3, :]], dim=1)
    cols = [sm[:, :, 0] / u, sm[:, :, 1] / u, sm[:, :, 2] - k * (sm[:, :, 0] + sm[:, :, 1]) / u]
    return normalize(torch.stack(cols, dim=2))


def from_pixel_frame(m_pix: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_pixel_frame`: 50x50-frame pixel warps (B, 3, 3) -> canonical warps (B, 3, 3)."""
    _check_matrix(m_pix, "from_pixel_frame")
    u, k = float(CANONICAL_UNIT_PX), FRAME_PX / 2
    sm = torch.cat([(m_pix[:, :2, :] - k * m_pix[:, 2:3, :]) / u, m_pix[:, 2:3, :]], dim=1)
    cols = [u * sm[:, :, 0], u * sm[:, :, 1], k * (sm[:, :, 0] + sm[:, :, 1]) + sm[:, :, 2]]
    return normalize(torch.stack(cols, dim=2))


def sampling_grid(m: torch.Tensor, out_size: int, frame: int = FRAME_PX, extent: float = 1.0) -> torch.Tensor:
    """grid_sample grid of an ``out_size`` x ``out_size`` crop sampled through the warps ``m``.

    Output pixel centres of the crop, in canonical coordinates ``extent * (-1 + 2 (u + 0.5) / S)``, are mapped
    by ``m``, divided by ``w`` and scaled by ``2 * 18 / frame`` into normalized input coordinates
    (``align_corners=False``: -1 and +1 are the outer edges of the input). The grid does not depend on the
    input's resolution, so feature maps covering the same frame use the same grid. Built with matmul and
    elementwise operations only (exports to ONNX, opset 17, ``dynamo=False``).

    Args:
        m: (B, 3, 3) canonical warps (output -> input).
        out_size: side S of the crop in pixels.
        frame: side of the input frame in pixels of 1/18 canonical unit (50: the network frame).
        extent: half-side of the sampled region in canonical units: 1 for the canonical box, ``FRAME_EXTENT``
            (25/18) for the whole 50x50 frame.

    Returns:
        (B, S, S, 2) grid, last axis (x, y), for ``F.grid_sample(..., align_corners=False)``.
    """
    _check_matrix(m, "sampling_grid")
    if out_size < 1:
        raise ShapeError(f"sampling_grid: out_size must be positive, got {out_size}")
    centres = (torch.arange(out_size, dtype=m.dtype, device=m.device) * 2 + 1) * (extent / out_size) - extent
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")
    base = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).reshape(out_size * out_size, 3)
    points = torch.matmul(base, m.transpose(1, 2))  # (B, S*S, 3)
    xy = points[:, :, 0:2] / points[:, :, 2:3]
    return (xy * (2.0 * CANONICAL_UNIT_PX / frame)).reshape(m.shape[0], out_size, out_size, 2)


def warp_images(
    images: torch.Tensor,
    m: torch.Tensor,
    out_size: int,
    *,
    extent: float = 1.0,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """Sample crops of ``images`` through the warps ``m`` with torch's grid_sample (data generation, plots).

    Args:
        images: (B, C, H, W) float images covering the 50x50 frame (usually H = W = 50).
        m: (B, 3, 3) canonical warps.
        out_size: side S of the output.
        extent: 1 for the canonical box, ``FRAME_EXTENT`` for the whole frame (see :func:`sampling_grid`).
        mode: grid_sample's interpolation mode.
        padding_mode: grid_sample's padding mode outside the frame.

    Returns:
        (B, C, S, S).
    """
    if not _tracing() and (images.ndim != 4 or images.shape[0] != m.shape[0]):
        raise ShapeError(
            f"warp_images: expected (B, C, H, W) images with B = {m.shape[0]}, got {tuple(images.shape)}"
        )
    grid = sampling_grid(m.to(images.dtype), out_size, extent=extent)
    return F.grid_sample(images, grid, mode=mode, padding_mode=padding_mode, align_corners=False)


def fit_homography(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Homographies mapping 4 points ``src`` to 4 points ``dst`` (batched DLT with h33 = 1, solved in
    float64).

    Args:
        src: (B, 4, 2) points (x, y).
        dst: (B, 4, 2) points (x, y), same frame.

    Returns:
        (B, 3, 3) in ``src``'s dtype, ``H @ [x_src, y_src, 1] ~ [x_dst, y_dst, 1]``, ``H[:, 2, 2] == 1``.
    """
    if not _tracing() and (src.ndim != 3 or src.shape[1:] != (4, 2) or dst.shape != src.shape):
        raise ShapeError(
            f"fit_homography: expected two (B, 4, 2), got {tuple(src.shape)}, {tuple(dst.shape)}"
        )
    s, t = src.to(torch.float64), dst.to(torch.float64)
    x, y, u, v = s[..., 0], s[..., 1], t[..., 0], t[..., 1]
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -x * u, -y * u], dim=-1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -x * v, -y * v], dim=-1)
    a = torch.cat([rows_u, rows_v], dim=1)  # (B, 8, 8)
    b = torch.cat([u, v], dim=1)  # (B, 8)
    try:
        h = torch.linalg.solve(a, b)
    except RuntimeError as exc:  # torch.linalg.LinAlgError: three of the points are collinear
        raise TrainingError(f"fit_homography: degenerate point configuration ({exc})") from exc
    return torch.cat([h, torch.ones_like(h[:, :1])], dim=1).reshape(-1, 3, 3).to(src.dtype)


def canonical_corners(
    dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """(4, 2) canonical box corners (x, y): top-left, top-right, bottom-right, bottom-left."""
    return torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], dtype=dtype, device=device)


def perturbation_warps(
    batch: int,
    *,
    scale: float = 0.25,
    translation_scale: float = 0.25,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """IC-STN's random homography perturbations.

    Each of the 4 canonical corners (+-1, +-1) moves by its own N(0, 1) * ``scale`` in x and in y, plus one
    N(0, 1) * ``translation_scale`` shift per image and axis shared by the 4 corners (canonical units; one
    unit = 18 px). The warp is the homography mapping the canonical corners to the moved corners: the crop it
    samples is the quadrilateral of the moved corners. Per coordinate the corner displacement has standard
    deviation ``sqrt(scale^2 + translation_scale^2)``, and two corners' displacements correlate by
    ``translation_scale^2 / (scale^2 + translation_scale^2)``.

    Random numbers are drawn as one (B, 2, 5) standard normal tensor on the generator's device (CPU when no
    generator is given; pass a seeded CPU generator for figures reproducible across devices), the fit is
    solved in float64, and the result is cast to ``dtype`` on ``device``.

    Args:
        batch: B.
        scale: standard deviation of each corner's own displacement.
        translation_scale: standard deviation of the shared translation.
        generator: torch random generator (None: the global one).
        dtype: result dtype.
        device: result device (None: CPU).

    Returns:
        (B, 3, 3) canonical warps; exactly the identity when both scales are 0.
    """
    if batch < 0 or scale < 0 or translation_scale < 0:
        raise ConfigError(
            f"perturbation_warps: batch and scales must be >= 0, got {batch}, {scale}, {translation_scale}"
        )
    if scale == 0 and translation_scale == 0:
        return torch.eye(3, dtype=dtype, device=device).expand(batch, 3, 3).clone()
    draw_device = generator.device if generator is not None else torch.device("cpu")
    noise = torch.randn(batch, 2, 5, generator=generator, dtype=torch.float64, device=draw_device)
    shift = noise[:, :, :4] * scale + noise[:, :, 4:] * translation_scale  # (B, 2 axes, 4 corners)
    src = canonical_corners(torch.float64, draw_device).expand(batch, 4, 2)
    dst = src + shift.transpose(1, 2)
    return fit_homography(src, dst).to(dtype=dtype, device=device)


def rotation_warps(angles_rad: torch.Tensor) -> torch.Tensor:
    """Rotations about the crop centre (canonical origin), for the rotated-GTSRB study.

    ``M = [[cos a, -sin a, 0], [sin a, cos a, 0], [0, 0, 1]]`` maps output to input, and with y down a
    positive angle turns clockwise on screen. Sampling through ``rotation_warps(a)`` undoes a content rotation
    by ``a``; to rotate an image's content by ``a`` (clockwise on screen for a > 0), warp it with
    ``rotation_warps(-a)``. :func:`rotation_angle` reads the angle back.

    Args:
        angles_rad: (B,) angles in radians.

    Returns:
        (B, 3, 3) canonical warps in ``angles_rad``'s dtype.
    """
    if not _tracing() and angles_rad.ndim != 1:
        raise ShapeError(f"rotation_warps: expected (B,) angles, got {tuple(angles_rad.shape)}")
    c, s = torch.cos(angles_rad), torch.sin(angles_rad)
    one, zero = torch.ones_like(c), torch.zeros_like(c)
    return torch.stack([c, -s, zero, s, c, zero, zero, zero, one], dim=1).reshape(-1, 3, 3)


def rotate_frames(images: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Rotate the pixels of whole frames about the canonical crop's centre (rotated GTSRB, issue 5).

    Output pixel ``q`` (canonical coordinates of the frame) takes the input's value at ``rotations @ q``
    (bilinear, zeros outside the frame), so a warp from :func:`random_rotations` turns the content by its
    angle, and a model that then samples the rotated frame through a warp ``P`` sees what ``rotations o P``
    shows of the original frame, up to the frame's corners (zeros here) and one extra bilinear resampling.

    Args:
        images: (B, C, 50, 50) float frames (any value range; 0 fills the corners the rotation uncovers).
        rotations: (B, 3, 3) canonical warps about the crop centre (any canonical warp works).

    Returns:
        (B, C, 50, 50) rotated frames, ``images``' dtype and device; the identity returns ``images`` (up to
        float rounding).
    """
    if not _tracing() and (images.ndim != 4 or images.shape[-2:] != (FRAME_PX, FRAME_PX)):
        raise ShapeError(
            f"rotate_frames: expected (B, C, {FRAME_PX}, {FRAME_PX}) frames, got {tuple(images.shape)}"
        )
    return warp_images(images, rotations.to(images.device), FRAME_PX, extent=FRAME_EXTENT)


def random_rotations(
    batch: int,
    max_deg: float,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random rotations about the crop centre, uniform in [-max_deg, max_deg] (the rotated-GTSRB study).

    The angles are one ``torch.rand(batch, dtype=float64)`` draw on the generator's device (CPU when no
    generator is given), ``a = (2 u - 1) * max_deg``; the warps rotate each image's content by ``a``
    (``rotation_warps(-a)``, clockwise on screen for a > 0), so a transformer that undoes them predicts
    ``rotation_angle == a``.

    Args:
        batch: B.
        max_deg: largest rotation in degrees (>= 0).
        generator: torch random generator (None: the global one).
        dtype: dtype of the warps.
        device: device of the warps (None: CPU).

    Returns:
        ``(warps (B, 3, 3) canonical, angles (B,) float64 degrees on the generator's device)``.
    """
    if batch < 0 or max_deg < 0:
        raise ConfigError(f"random_rotations: batch and max_deg must be >= 0, got {batch}, {max_deg}")
    draw_device = generator.device if generator is not None else torch.device("cpu")
    draws = torch.rand(batch, generator=generator, dtype=torch.float64, device=draw_device)
    angles = (draws * 2 - 1) * max_deg
    warps = rotation_warps(torch.deg2rad(-angles)).to(dtype=dtype, device=device)
    return warps, angles


def rotation_angle(m: torch.Tensor) -> torch.Tensor:
    """(B,) rotation angle in radians of the similarity nearest to each warp's 2x2 block (after normalizing).

    ``atan2(m10 - m01, m00 + m11)``; equals ``a`` for ``rotation_warps(a)`` (a in (-pi, pi]).
    """
    m = normalize(m)
    return torch.atan2(m[:, 1, 0] - m[:, 0, 1], m[:, 0, 0] + m[:, 1, 1])
