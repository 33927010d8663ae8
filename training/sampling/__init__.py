"""Differentiable image samplers: a drop-in ``grid_sample`` with linearized multi-sampling and baselines.

Public API::

    from training.sampling import grid_sample, GridSampler, SAMPLING_MODES
"""

from training.sampling.functional import expected_linearized_sample, grid_sample
from training.sampling.modes import EVAL_FORWARDS, PADDING_MODES, SAMPLING_MODES
from training.sampling.module import GridSampler

__all__ = [
    "EVAL_FORWARDS",
    "PADDING_MODES",
    "SAMPLING_MODES",
    "GridSampler",
    "expected_linearized_sample",
    "grid_sample",
]
