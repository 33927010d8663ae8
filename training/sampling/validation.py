"""Argument checks of every sampler call: explicit exceptions naming the expected and the actual value.

The options themselves are validated once, when a :class:`~training.sampling.options.SamplerOptions` is
built."""

from __future__ import annotations

import torch

from training.errors import ConfigError, ShapeError


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


def check_generator(generator: torch.Generator | None, device: torch.device) -> None:
    """Check the random generator of a linearized call.

    Args:
        generator: None (torch's default generator) or a ``torch.Generator`` on the input's device type.
        device: the input's device.

    Raises:
        ConfigError: for something else than a generator.
        ShapeError: for a generator on another device type than the input.
    """
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise ConfigError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if generator.device.type != device.type:
        raise ShapeError(
            f"generator must be on the input's device type: expected {device.type}, "
            f"got {generator.device.type}"
        )
