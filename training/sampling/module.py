"""``GridSampler``: the ``nn.Module`` wrapper, random while training, deterministic in eval mode."""

from __future__ import annotations

import torch
from torch import nn

from training.sampling.dispatch import sample
from training.sampling.options import SamplerOptions


class GridSampler(nn.Module):
    """Sample images at normalized grids with a chosen sampler.

    Training mode runs ``mode`` (for "linearized": the stochastic forward, plane-slope grid gradient). Eval
    mode is deterministic: for "linearized", ``eval_forward="bilinear"`` is exact bilinear sampling and
    ``eval_forward="expected"`` is bilinear sampling of the input prefiltered by the Gaussian of the auxiliary
    offsets' spread (the expected value of the training forward; standard ops: Pad/Gather, depthwise Conv,
    GridSample). Other modes are deterministic and run themselves. Both linearized eval forwards export to
    ONNX. Which forward runs is ``options.forward(self.training)``; :func:`training.sampling.dispatch.sample`
    runs it.

    Args:
        mode: one of ``SAMPLING_MODES`` (or "expected").
        padding_mode: "zeros", "border" or "reflection".
        align_corners: as in ``torch.nn.functional.grid_sample``.
        eval_forward: "bilinear" or "expected"; used by "linearized" in eval mode only.
        num_samples: linearized K (centre plus K - 1 auxiliary samples), >= 4.
        exact_forward: linearized: training forward value exactly bilinear (same gradients).
        offset_std: linearized offset noise std in output pixels (None: 0.25).
        push_std: linearized push-away std in input pixels (None: 1.0).
        backend: linearized training forward's implementation ("auto", "torch", "cpu", "triton").
        options: all of the above at once; when given, the other arguments are ignored.

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
        eval_forward: str = "bilinear",
        num_samples: int = 8,
        exact_forward: bool = False,
        offset_std: float | None = None,
        push_std: float | None = None,
        backend: str = "auto",
        options: SamplerOptions | None = None,
    ) -> None:
        super().__init__()
        if options is None:
            options = SamplerOptions(
                mode=mode,
                padding_mode=padding_mode,
                align_corners=align_corners,
                eval_forward=eval_forward,
                num_samples=num_samples,
                exact_forward=exact_forward,
                offset_std=offset_std,
                push_std=push_std,
                backend=backend,
            )
        self.options = options

    @property
    def inference_forward(self) -> str:
        """What eval mode computes: "bilinear" or "expected" for linearized, else the mode itself."""
        return self.options.forward(training=False)

    def forward(self, input: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """Sample ``input`` (N, C, H_in, W_in) at ``grid`` (N, H_out, W_out, 2) -> (N, C, H_out, W_out)."""
        return sample(input, grid, self.options, forward=self.options.forward(self.training))

    def extra_repr(self) -> str:
        o = self.options
        return (
            f"mode={o.mode!r}, padding_mode={o.padding_mode!r}, align_corners={o.align_corners}, "
            f"inference_forward={self.inference_forward!r}, num_samples={o.num_samples}"
        )
