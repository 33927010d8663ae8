"""The training package's error hierarchy.

Every error a user can cause (bad data folder, bad CSV, bad config, bad checkpoint, bad shapes passed to a
sampler) is a :class:`TrainingError`; the CLI maps it to one line on stderr and a non-zero exit code.
"""

from __future__ import annotations


class TrainingError(Exception):
    """Base class of every error the training package raises on purpose."""


class DataError(TrainingError):
    """The data set is missing or malformed (folder, CSV, image, label); the message names the file."""


class ConfigError(TrainingError, ValueError):
    """A configuration value or file is invalid; the message names the key."""


class CheckpointError(TrainingError):
    """A checkpoint cannot be read or does not describe a model this package can rebuild."""


class ExportError(TrainingError):
    """Export failed a check (onnx.checker, or onnxruntime/torch parity)."""


class ShapeError(TrainingError, ValueError):
    """A tensor argument has the wrong shape, dtype or device; the message states expected and actual."""
