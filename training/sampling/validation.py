"""Argument checks shared by every sampler: explicit exceptions naming the expected and the actual value."""

from __future__ import annotations

import torch

from training.errors import ConfigError, ShapeError
from training.sampling.modes import EVAL_FORWARDS, PADDING_MODES, SAMPLING_MODES


def check_sampler_inputs(input: torch.Tensor, grid: torch.Tensor) -> None:
    """Check that ``input`` and ``grid`` can be sampled together.

    Args:
        input: image batch, shape (N, C, H_in, W_in), floating point, H_in and W_in > 0.
        grid: sampling positions, shape (N, H_out, W_out, 2), normalized [-1, 1], x then y; same batch size,
            dtype and device as ``input``.

    Raises:
        ShapeError: naming the expected and the actual shape, dtype, device or batch size.
    """
    for name, tensor in (("input", input), ("grid", grid)):
        if not isinstance(tensor, torch.Tensor):
            raise ShapeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if input.dim() != 4:
        raise ShapeError(f"input must be 4-D (N, C, H_in, W_in), got shape {tuple(input.shape)}")
    if grid.dim() != 4:
        raise ShapeError(f"grid must have shape (N, H_out, W_out, 2), got shape {tuple(grid.shape)}")
    if input.device != grid.device:
        raise ShapeError(f"grid must be on the input's device: expected {input.device}, got {grid.device}")
    if not input.is_floating_point():
        raise ShapeError(f"input must have a floating-point dtype, got {input.dtype}")
    if grid.dtype != input.dtype:
        raise ShapeError(f"grid must have the input's dtype: expected {input.dtype}, got {grid.dtype}")
    if torch.jit.is_tracing():
        return  # sizes are traced values during an ONNX export; they were checked by the eager run
    if grid.shape[-1] != 2:
        raise ShapeError(f"grid must have shape (N, H_out, W_out, 2), got shape {tuple(grid.shape)}")
    if grid.shape[0] != input.shape[0]:
        raise ShapeError(
            f"grid batch size must equal input batch size: expected {input.shape[0]}, got {grid.shape[0]} "
            f"(input {tuple(input.shape)}, grid {tuple(grid.shape)})"
        )
    if input.shape[2] == 0 or input.shape[3] == 0:
        raise ShapeError(f"input must have non-empty H_in and W_in, got shape {tuple(input.shape)}")


def check_mode(mode: str, padding_mode: str) -> None:
    """Check the sampling and padding mode names.

    Raises:
        ConfigError: for a name outside ``SAMPLING_MODES`` or ``PADDING_MODES``.
    """
    if mode not in SAMPLING_MODES:
        raise ConfigError(f"mode must be one of {SAMPLING_MODES}, got {mode!r}")
    if padding_mode not in PADDING_MODES:
        raise ConfigError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")


def check_eval_forward(eval_forward: str) -> None:
    """Check the name of the deterministic forward that a linearized sampler uses in eval mode.

    Raises:
        ConfigError: for a name outside ``EVAL_FORWARDS``.
    """
    if eval_forward not in EVAL_FORWARDS:
        raise ConfigError(f"eval_forward must be one of {EVAL_FORWARDS}, got {eval_forward!r}")


def check_linearized_options(
    num_samples: int,
    offset_std: float | None,
    push_std: float | None,
    generator: torch.Generator | None,
    device: torch.device,
) -> None:
    """Check the options of linearized multi-sampling.

    Args:
        num_samples: K, the centre plus K - 1 auxiliary samples; K - 1 >= 3 points are needed to fit a plane
            with intercept.
        offset_std: auxiliary offset noise in output pixels (None: the default), finite and >= 0.
        push_std: push-away jitter in input pixels (None: the default), finite and >= 0.
        generator: optional random generator, on the input's device type.
        device: the input's device.

    Raises:
        ConfigError: for an invalid option value.
        ShapeError: for a generator on another device type than the input.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 4:
        raise ConfigError(
            f"num_samples must be an int >= 4 (the centre plus >= 3 auxiliary), got {num_samples!r}"
        )
    for name, value in (("offset_std", offset_std), ("push_std", push_std)):
        if value is not None and not (float(value) >= 0.0 and float(value) < float("inf")):
            raise ConfigError(f"{name} must be a finite number >= 0 or None, got {value!r}")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise ConfigError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        if generator.device.type != device.type:
            raise ShapeError(
                f"generator must be on the input's device type: expected {device.type}, "
                f"got {generator.device.type}"
            )
