"""Static sizes and constants for code that an ONNX (TorchScript) export traces.

The exported sampler graphs have a dynamic batch but static C, H and W: the filter taps, padding indices,
pyramid sizes and grid maps are computed in Python from those sizes and become constants of the graph. The
tracer warns about exactly that (``TracerWarning``); here it is intended, so these helpers silence it
narrowly.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch


def static_sizes(tensor: torch.Tensor, dims: tuple[int, ...]) -> tuple[int, ...]:
    """The sizes of ``tensor`` along ``dims`` as Python ints (constants of a traced graph).

    Never pass the batch dimension of an exported graph, which stays dynamic.
    """
    if not torch.jit.is_tracing():
        return tuple(int(tensor.shape[d]) for d in dims)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        return tuple(int(tensor.shape[d]) for d in dims)


def constant(data: Sequence[Any], *, like: torch.Tensor) -> torch.Tensor:
    """``torch.tensor(data)`` with the dtype and device of ``like`` (a constant of a traced graph)."""
    if not torch.jit.is_tracing():
        return torch.tensor(data, dtype=like.dtype, device=like.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        return torch.tensor(data, dtype=like.dtype, device=like.device)
