"""Differentiable image samplers: a drop-in ``grid_sample`` with linearized multi-sampling and baselines.

Public API::

    from training.sampling import grid_sample, GridSampler, SAMPLING_MODES

The names are loaded on first use, so importing a torch-free module of this package (``modes``) does not
import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from training._lazy import lazy_exports
from training.sampling.modes import EVAL_FORWARDS, PADDING_MODES, SAMPLING_MODES

if TYPE_CHECKING:
    from training.sampling.functional import expected_linearized_sample, grid_sample
    from training.sampling.module import GridSampler

__all__ = [
    "EVAL_FORWARDS",
    "PADDING_MODES",
    "SAMPLING_MODES",
    "GridSampler",
    "expected_linearized_sample",
    "grid_sample",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "grid_sample": "training.sampling.functional",
        "expected_linearized_sample": "training.sampling.functional",
        "GridSampler": "training.sampling.module",
    },
)
