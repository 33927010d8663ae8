"""Least-squares plane fit per output location, accumulated one auxiliary sample at a time.

For every output location and channel, the auxiliary samples ``v_k`` at offsets ``d_k`` from the sampling
point are fitted by the plane ``v ~ v_0 + b + g . d`` (slope ``g``, intercept ``b``), as in the authors'
code. The offsets are ``d_k = (s_x z_xk, s_y z_yk)`` with standard normal ``z`` and per-axis spreads ``s``
(normalized coordinates); the fit is done in ``z`` units (equivariant: ``g_x = h_x / s_x``), so it only needs
the sums ``sum z``, ``sum z z^T``, ``sum v``, ``sum z v`` over the K - 1 auxiliary points, and nothing of
size (K, ...):

* centred moments ``Z = sum z z^T - n m m^T`` (2x2, shared by the channels), ``c = sum z v - n m mean(v)``,
  with ``n = K - 1`` and ``m = mean(z)``;
* slope ``h = Z^{-1} c`` (closed-form 2x2 inverse), ``g = h / s``; intercept ``b = mean(v) - v_0 - h . m``;
* so the fitted plane at the sampling point is ``v_0 + b = mean(v) - h . m``: the centre sample cancels.

Ill-conditioned geometry (``det Z <= RCOND * trace(Z)^2``, e.g. coincident or collinear points), a zero spread
``s`` on an axis, and non-finite slopes (NaN or Inf input) give a zero slope there (the value is then the
intercept-only fit ``mean(v)``): never NaN or Inf from the fit itself, and no message.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

RCOND = 1e-6
"""Smallest accepted ``det Z / trace(Z)^2`` (about 1 / condition number of Z); below it the slope is zero."""


@dataclass
class PlaneFitSums:
    """Running sums of the plane fit, in ``z`` units (offsets divided by the per-axis spread).

    Attributes:
        count: number of auxiliary points added so far.
        sum_v: (N, C, H_out, W_out) sum of the auxiliary samples.
        sum_zv: (2, N, C, H_out, W_out) sums of z_x * v and z_y * v (this storage becomes the slopes).
        sum_z: (2, N, 1, H_out, W_out) sum of (z_x, z_y).
        sum_zz: (2, N, 1, H_out, W_out) sum of (z_x^2, z_y^2).
        sum_xy: (N, 1, H_out, W_out) sum of z_x * z_y.
    """

    count: int
    sum_v: torch.Tensor
    sum_zv: torch.Tensor
    sum_z: torch.Tensor
    sum_zz: torch.Tensor
    sum_xy: torch.Tensor

    @classmethod
    def first(
        cls, z: torch.Tensor, value: torch.Tensor, *, sum_v: torch.Tensor, sum_zv: torch.Tensor
    ) -> PlaneFitSums:
        """Sums holding the first auxiliary point, written into the given buffers (no zero-filling pass).

        Args:
            z: (2, N, 1, H_out, W_out) offset in spread units, x plane then y plane, accumulation dtype.
            value: (N, C, H_out, W_out) the input sampled there (any float dtype).
            sum_v: (N, C, H_out, W_out) buffer for the sum of samples (becomes the plane's value).
            sum_zv: (2, N, C, H_out, W_out) buffer for the sums of z * v (becomes the slopes); may be a view.
        """
        sum_v.copy_(value)
        torch.mul(value, z[0], out=sum_zv[0])
        torch.mul(value, z[1], out=sum_zv[1])
        return cls(1, sum_v, sum_zv, z.clone(), z * z, z[0] * z[1])

    def add(self, z: torch.Tensor, value: torch.Tensor) -> None:
        """Add one auxiliary point per output location.

        Args:
            z: (2, N, 1, H_out, W_out) offset from the sampling point in spread units, x plane then y plane.
            value: (N, C, H_out, W_out) the input sampled at the auxiliary point (any float dtype).
        """
        zx, zy = z[0], z[1]
        self.sum_v.add_(value)
        self.sum_zv[0].addcmul_(value, zx)
        self.sum_zv[1].addcmul_(value, zy)
        self.sum_z.add_(z)
        self.sum_zz.addcmul_(z, z)
        self.sum_xy.addcmul_(zx, zy)
        self.count += 1

    def solve(
        self, spread: tuple[float, float], *, need_value: bool = True
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Solve the fit; consumes the sums (their storage is reused in place).

        Args:
            spread: (s_x, s_y), the offsets' per-axis spread in normalized units; 0 gives a zero slope on that
                axis.
            need_value: compute the plane's value (skipped for ``exact_forward``).

        Returns:
            ``(value, slope)``: value (N, C, H_out, W_out), the fitted plane at the sampling point,
            ``mean(v) - h . m`` (None if not needed); slope (2, N, C, H_out, W_out), ``g = h / s`` along x and
            y in intensity per normalized unit of the grid. Both in the accumulation dtype.
        """
        n = float(self.count)
        mean_z = self.sum_z.div_(n)
        mx, my = mean_z[0], mean_z[1]
        zxx = self.sum_zz[0].addcmul_(mx, mx, value=-n)
        zyy = self.sum_zz[1].addcmul_(my, my, value=-n)
        zxy = self.sum_xy.addcmul_(mx, my, value=-n)
        det = zxx * zyy - zxy * zxy
        trace = zxx + zyy
        # 1 / det where the fit is well conditioned, else 0. The moments come from the finite offsets only, so
        # det is finite; (det > threshold) is False for det == trace == 0. (No torch.where: slow on CPU.)
        good = torch.gt(det, trace.square_().mul_(RCOND)).to(det.dtype)
        inv_det = good.div_(det.clamp_(min=torch.finfo(det.dtype).tiny))
        inv_x = 1.0 / spread[0] if spread[0] > 0 else 0.0
        inv_y = 1.0 / spread[1] if spread[1] > 0 else 0.0
        # Z^{-1} = [[a, b], [b, c]] / det, with the 1 / s scaling of g = h / s folded in.
        a = zyy.mul_(inv_det * inv_x)
        c = zxx.mul_(inv_det * inv_y)
        b_x = zxy * (inv_det * -inv_x)
        b_y = zxy.mul_(inv_det * -inv_y)

        sum_v, slope = self.sum_v, self.sum_zv
        cov_x, cov_y = slope[0], slope[1]
        cov_x.addcmul_(sum_v, mx, value=-1.0)  # sum z_x v - n m_x mean(v)
        cov_y.addcmul_(sum_v, my, value=-1.0)
        slope_x = torch.addcmul(cov_x * a, cov_y, b_x)
        cov_y.mul_(c).addcmul_(cov_x, b_y)
        cov_x.copy_(slope_x)
        del slope_x
        torch.nan_to_num_(slope, nan=0.0, posinf=0.0, neginf=0.0)
        if not need_value:
            return None, slope
        # Plane at the sampling point: mean(v) - h . m = mean(v) - g . (s m).
        value = sum_v.div_(n).addcmul_(slope[0], mx.mul_(spread[0]), value=-1.0)
        value.addcmul_(slope[1], my.mul_(spread[1]), value=-1.0)
        return value, slope
