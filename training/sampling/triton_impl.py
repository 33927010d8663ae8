"""The Triton kernels of linearized sampling (imported only through :mod:`training.sampling.triton_kernel`,
which documents them; this module imports triton at the top, so it is never imported without it).

Every kernel takes element strides, so non-contiguous inputs, grids and gradients need no copy. Arithmetic is
in ``ACC`` (float32 for float16/bfloat16/float32 inputs, float64 for float64) and follows
training/sampling/fit.py step for step.
"""

# mypy: disable-error-code="no-untyped-def"
# (Triton kernels take untyped tensors and constexprs: the JIT, not Python, types their arguments.)

from __future__ import annotations

import triton
import triton.language as tl
from triton.language.random import pair_uniform_to_normal, uint_to_uniform_float


@triton.jit
def _normal_pair(seed, counter):
    """(z_x, z_y): Box-Muller of the first two uint32 of Philox4x32-10(key=seed, counter=(counter, 0, 0, 0)),
    i.e. the first two outputs of ``tl.randn4x(seed, counter)``."""
    r0, r1, _r2, _r3 = tl.randint4x(seed, counter)
    return pair_uniform_to_normal(uint_to_uniform_float(r0), uint_to_uniform_float(r1))


@triton.jit
def _source_index(coord, size, PADDING: tl.constexpr, ALIGN: tl.constexpr):
    """Normalized coordinate -> source pixel coordinate with the padding applied (aten's
    ``grid_sampler_compute_source_index``; PADDING 0 zeros, 1 border, 2 reflection)."""
    if ALIGN:  # noqa: SIM108 (a constexpr branch of the JIT)
        coord = (coord + 1) * 0.5 * (size - 1)
    else:
        coord = ((coord + 1) * size - 1) * 0.5
    if PADDING == 2:
        if ALIGN:
            low = 0.0
            span = size - 1.0
        else:
            low = -0.5
            span = size * 1.0
        safe = tl.maximum(span, 1.0)
        dist = tl.abs(coord - low)
        flips = tl.floor(dist / safe)
        extra = dist - flips * safe
        odd = flips - 2.0 * tl.floor(flips * 0.5)
        coord = tl.where(odd == 0.0, extra + low, span - extra + low)
        coord = tl.where(span > 0.0, coord, 0.0 * coord)
    if PADDING >= 1:
        coord = tl.minimum(tl.maximum(coord, 0.0), size - 1.0)
    return coord


@triton.jit
def _bilinear(rows, ix, iy, h, w, sxh, sxw, mask, ACC: tl.constexpr):
    """Bilinear samples at (ix, iy) pixels, (BLOCK, BLOCK_C): ``rows`` (BLOCK, BLOCK_C) points at each
    location's image and channel; corners outside the image read 0."""
    # Points further than one pixel outside read only zeros: clamp them before the integer conversion.
    ix = tl.minimum(tl.maximum(ix, -2.0), w + 1.0)
    iy = tl.minimum(tl.maximum(iy, -2.0), h + 1.0)
    fx = tl.floor(ix)
    fy = tl.floor(iy)
    tx = ix - fx
    ty = iy - fy
    x0 = fx.to(tl.int32)
    y0 = fy.to(tl.int32)
    x1 = x0 + 1
    y1 = y0 + 1
    vx0 = (x0 >= 0) & (x0 < w)
    vx1 = (x1 >= 0) & (x1 < w)
    vy0 = (y0 >= 0) & (y0 < h)
    vy1 = (y1 >= 0) & (y1 < h)
    o00 = (y0.to(tl.int64) * sxh + x0.to(tl.int64) * sxw)[:, None]
    o01 = (y0.to(tl.int64) * sxh + x1.to(tl.int64) * sxw)[:, None]
    o10 = (y1.to(tl.int64) * sxh + x0.to(tl.int64) * sxw)[:, None]
    o11 = (y1.to(tl.int64) * sxh + x1.to(tl.int64) * sxw)[:, None]
    p00 = tl.load(rows + o00, mask=mask & (vx0 & vy0)[:, None], other=0.0).to(ACC)
    p01 = tl.load(rows + o01, mask=mask & (vx1 & vy0)[:, None], other=0.0).to(ACC)
    p10 = tl.load(rows + o10, mask=mask & (vx0 & vy1)[:, None], other=0.0).to(ACC)
    p11 = tl.load(rows + o11, mask=mask & (vx1 & vy1)[:, None], other=0.0).to(ACC)
    wx1 = tx[:, None]
    wy1 = ty[:, None]
    wx0 = 1.0 - wx1
    wy0 = 1.0 - wy1
    return (p00 * wx0 + p01 * wx1) * wy0 + (p10 * wx0 + p11 * wx1) * wy1


@triton.jit(do_not_specialize=["M", "C", "H_in", "W_in", "W_out", "HW"])
def linearized_fit_kernel(
    x_ptr,
    grid_ptr,
    seed_ptr,
    params_ptr,
    value_ptr,
    slope_ptr,
    M,
    C,
    H_in,
    W_in,
    W_out,
    HW,
    sxn,
    sxc,
    sxh,
    sxw,
    sgn,
    sgh,
    sgw,
    sgc,
    slope_stride,
    NUM_AUX: tl.constexpr,
    PADDING: tl.constexpr,
    ALIGN: tl.constexpr,
    NEED_VALUE: tl.constexpr,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """One program: BLOCK output locations x BLOCK_C channels. Draws the K - 1 offsets (Philox), samples them
    bilinearly, accumulates the fit's sums in registers and writes the plane's value and slope."""
    loc = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    lmask = loc < M
    b = loc // HW
    q = loc - b * HW
    i = q // W_out
    j = q - i * W_out
    ch = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = ch < C
    mask = lmask[:, None] & cmask[None, :]
    g_off = b.to(tl.int64) * sgn + i.to(tl.int64) * sgh + j.to(tl.int64) * sgw
    gx = tl.load(grid_ptr + g_off, mask=lmask, other=0.0).to(ACC)
    gy = tl.load(grid_ptr + g_off + sgc, mask=lmask, other=0.0).to(ACC)
    rows = x_ptr + (b.to(tl.int64) * sxn)[:, None] + (ch.to(tl.int64) * sxc)[None, :]
    seed = tl.load(seed_ptr)
    spread_x = tl.load(params_ptr)
    spread_y = tl.load(params_ptr + 1)
    inv_x = tl.load(params_ptr + 2)
    inv_y = tl.load(params_ptr + 3)
    rcond = tl.load(params_ptr + 4)

    s_x = tl.zeros([BLOCK], ACC)
    s_y = tl.zeros([BLOCK], ACC)
    s_xx = tl.zeros([BLOCK], ACC)
    s_yy = tl.zeros([BLOCK], ACC)
    s_xy = tl.zeros([BLOCK], ACC)
    s_v = tl.zeros([BLOCK, BLOCK_C], ACC)
    s_xv = tl.zeros([BLOCK, BLOCK_C], ACC)
    s_yv = tl.zeros([BLOCK, BLOCK_C], ACC)
    counter = loc.to(tl.int64)  # k * M + loc for auxiliary point k (int64: no overflow)
    for _k in range(NUM_AUX):
        zx, zy = _normal_pair(seed, counter)
        counter += M
        zx = zx.to(ACC)
        zy = zy.to(ACC)
        ix = _source_index(gx + zx * spread_x, W_in, PADDING, ALIGN)
        iy = _source_index(gy + zy * spread_y, H_in, PADDING, ALIGN)
        v = _bilinear(rows, ix, iy, H_in, W_in, sxh, sxw, mask, ACC)
        s_x += zx
        s_y += zy
        s_xx += zx * zx
        s_yy += zy * zy
        s_xy += zx * zy
        s_v += v
        s_xv += zx[:, None] * v
        s_yv += zy[:, None] * v

    count = NUM_AUX * 1.0
    mx = s_x / count
    my = s_y / count
    zxx = s_xx - count * mx * mx
    zyy = s_yy - count * my * my
    zxy = s_xy - count * mx * my
    det = zxx * zyy - zxy * zxy
    trace = zxx + zyy
    good = det > rcond * trace * trace
    inv_det = tl.where(good, 1.0 / tl.where(good, det, 1.0), 0.0)
    a = zyy * (inv_det * inv_x)
    c = zxx * (inv_det * inv_y)
    b_x = zxy * (inv_det * -inv_x)
    b_y = zxy * (inv_det * -inv_y)
    cov_x = s_xv - s_v * mx[:, None]
    cov_y = s_yv - s_v * my[:, None]
    slope_x = cov_x * a[:, None] + cov_y * b_x[:, None]
    slope_y = cov_y * c[:, None] + cov_x * b_y[:, None]
    slope_x = tl.where((slope_x - slope_x) == 0.0, slope_x, 0.0)  # NaN and +-Inf -> 0
    slope_y = tl.where((slope_y - slope_y) == 0.0, slope_y, 0.0)
    out = (b.to(tl.int64) * C)[:, None] * HW + (ch.to(tl.int64) * HW)[None, :] + q.to(tl.int64)[:, None]
    tl.store(slope_ptr + out, slope_x, mask=mask)
    tl.store(slope_ptr + slope_stride + out, slope_y, mask=mask)
    if NEED_VALUE:
        value = s_v / count - slope_x * (mx * spread_x)[:, None] - slope_y * (my * spread_y)[:, None]
        tl.store(value_ptr + out, value, mask=mask)


@triton.jit(do_not_specialize=["M", "C", "W_out", "HW"])
def grid_grad_kernel(
    go_ptr,
    slope_ptr,
    out_ptr,
    M,
    C,
    W_out,
    HW,
    son,
    soc,
    soh,
    sow,
    slope_stride,
    ACC: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """out[loc] = (sum_c go[b, c, q] * slope_x[b, c, q], same with slope_y): (M, 2) contiguous."""
    loc = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    lmask = loc < M
    b = loc // HW
    q = loc - b * HW
    i = q // W_out
    j = q - i * W_out
    go_base = b.to(tl.int64) * son + i.to(tl.int64) * soh + j.to(tl.int64) * sow
    slope_base = (b.to(tl.int64) * C) * HW + q.to(tl.int64)
    acc_x = tl.zeros([BLOCK], ACC)
    acc_y = tl.zeros([BLOCK], ACC)
    for c0 in range(0, C, BLOCK_C):
        ch = c0 + tl.arange(0, BLOCK_C)
        mask = lmask[:, None] & (ch < C)[None, :]
        go = tl.load(go_ptr + go_base[:, None] + (ch.to(tl.int64) * soc)[None, :], mask=mask, other=0.0)
        go = go.to(ACC)
        s_off = slope_base[:, None] + (ch.to(tl.int64) * HW)[None, :]
        acc_x += tl.sum(go * tl.load(slope_ptr + s_off, mask=mask, other=0.0), axis=1)
        acc_y += tl.sum(go * tl.load(slope_ptr + slope_stride + s_off, mask=mask, other=0.0), axis=1)
    tl.store(out_ptr + 2 * loc.to(tl.int64), acc_x, mask=lmask)
    tl.store(out_ptr + 2 * loc.to(tl.int64) + 1, acc_y, mask=lmask)


@triton.jit(do_not_specialize=["M"])
def offsets_kernel(seed_ptr, z_ptr, M, NUM_AUX: tl.constexpr, BLOCK: tl.constexpr):
    """The standard-normal offsets the fit kernel draws, materialized: z (K - 1, 2, M) float32."""
    loc = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    lmask = loc < M
    seed = tl.load(seed_ptr)
    loc64 = loc.to(tl.int64)
    counter = loc64  # k * M + loc; z_x of point k is at 2 k M + loc = 2 counter - loc, z_y M further
    for _k in range(NUM_AUX):
        zx, zy = _normal_pair(seed, counter)
        tl.store(z_ptr + (2 * counter - loc64), zx, mask=lmask)
        tl.store(z_ptr + (2 * counter - loc64 + M), zy, mask=lmask)
        counter += M
