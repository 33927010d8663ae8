"""``GridSampler``: the ``nn.Module`` wrapper, random while training, deterministic in eval mode."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from training.sampling.functional import grid_sample
from training.sampling.prefilter import expected_grid_sample
from training.sampling.validation import (
    check_eval_forward,
    check_linearized_options,
    check_mode,
    check_sampler_inputs,
)


class GridSampler(nn.Module):
    """Sample images at normalized grids with a chosen sampler.

    Training mode runs ``mode`` (for "linearized": the stochastic forward, plane-slope grid gradient). Eval
    mode is deterministic: for "linearized", ``eval_forward="bilinear"`` is exact bilinear sampling and
    ``eval_forward="expected"`` is bilinear sampling of the input prefiltered by the Gaussian of the auxiliary
    offsets' spread (the expected value of the training forward; standard ops: Pad/Gather, depthwise Conv,
    GridSample). Other modes are deterministic and run themselves. Both linearized eval forwards export to
    ONNX.

    Args:
        mode: one of ``SAMPLING_MODES``.
        padding_mode: "zeros", "border" or "reflection".
        align_corners: as in ``torch.nn.functional.grid_sample``.
        eval_forward: "bilinear" or "expected"; used by "linearized" in eval mode only.
        num_samples: linearized K (centre plus K - 1 auxiliary samples), >= 4.
        exact_forward: linearized: training forward value exactly bilinear (same gradients).
        offset_std: linearized offset noise std in output pixels (None: 0.25).
        push_std: linearized push-away std in input pixels (None: 1.0).

    Shapes:
        input (N, C, H_in, W_in); grid (N, H_out, W_out, 2), normalized [-1, 1], x then y; output
        (N, C, H_out, W_out).

    Example:
        >>> sampler = GridSampler("linearized", eval_forward="expected").eval()
        >>> sampler.inference_forward
        'expected'
    """

    def __init__(
        self,
        mode: str = "linearized",
        padding_mode: str = "zeros",
        align_corners: bool = False,
        *,
        eval_forward: Literal["bilinear", "expected"] = "bilinear",
        num_samples: int = 8,
        exact_forward: bool = False,
        offset_std: float | None = None,
        push_std: float | None = None,
    ) -> None:
        super().__init__()
        check_mode(mode, padding_mode)
        check_eval_forward(eval_forward)
        check_linearized_options(num_samples, offset_std, push_std, None, torch.device("cpu"))
        self.mode = mode
        self.padding_mode = padding_mode
        self.align_corners = align_corners
        self.eval_forward = eval_forward
        self.num_samples = num_samples
        self.exact_forward = exact_forward
        self.offset_std = offset_std
        self.push_std = push_std

    @property
    def inference_forward(self) -> str:
        """What eval mode computes: "bilinear" or "expected" for linearized, else the mode itself."""
        return self.eval_forward if self.mode == "linearized" else self.mode

    def forward(self, input: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """Sample ``input`` (N, C, H_in, W_in) at ``grid`` (N, H_out, W_out, 2) -> (N, C, H_out, W_out)."""
        mode = self.mode if self.training else self.inference_forward
        if mode == "expected":
            check_sampler_inputs(input, grid)
            return expected_grid_sample(
                input,
                grid,
                self.padding_mode,
                self.align_corners,
                num_samples=self.num_samples,
                offset_std=self.offset_std,
                push_std=self.push_std,
            )
        return grid_sample(
            input,
            grid,
            mode,
            self.padding_mode,
            self.align_corners,
            num_samples=self.num_samples,
            offset_std=self.offset_std,
            push_std=self.push_std,
            exact_forward=self.exact_forward,
        )

    def extra_repr(self) -> str:
        return (
            f"mode={self.mode!r}, padding_mode={self.padding_mode!r}, align_corners={self.align_corners}, "
            f"inference_forward={self.inference_forward!r}, num_samples={self.num_samples}"
        )
