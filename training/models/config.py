"""The constructor arguments of every model: one frozen dataclass, stored in checkpoints and model cards.

Importing this module does not import torch, so configuration code (CLI, TOML parsing) stays light.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from training.conventions import (
    CANONICAL_SIZE,
    DOWNSAMPLING_RATES,
    EVAL_FORWARDS,
    FRAME_SIZE,
    SAMPLING_MODES,
    WARP_TYPES,
    crop_size,
)
from training.errors import ConfigError

__all__ = [
    "ARCHS",
    "CANONICAL_SIZE",
    "DOWNSAMPLING_RATES",
    "EVAL_FORWARDS",
    "FRAME_SIZE",
    "LOC_INPUTS",
    "MODEL_TYPES",
    "SAMPLING_MODES",
    "WARP_TYPES",
    "ModelConfig",
    "crop_size",
]

MODEL_TYPES = ("cnn", "stn", "icstn", "stn-c", "stn-sl")
ARCHS = ("paper", "poster", "large")
LOC_INPUTS = ("full", "output")


@dataclass(frozen=True)
class ModelConfig:
    """Everything :func:`training.models.build_model` needs; a checkpoint stores it as a plain dict.

    Attributes:
        model_type: ``cnn`` (no transformer), ``stn``, ``icstn``, ``stn-c`` (transform feature maps) or
            ``stn-sl`` (localisation shares the classifier's first layers).
        arch: ``paper`` (the small IC-STN traffic-sign networks), ``poster`` (classifiers sized like Jiang et
            al.'s GTSRB table, issue 5) or ``large`` (the served default).
        warp_type: the transformer's parametrization (translation 2, similarity 4, affine 6, homography 8).
        sampler: the training mode of :class:`training.sampling.GridSampler`.
        eval_forward: the sampler's deterministic forward in eval mode (and in the ONNX graph).
        num_samples: samples per output pixel of the linearized sampler in training.
        downsampling_rate: r in {1, 2, 4, 8}; the transformer outputs S = 36 / r pixels a side.
        warp_n: recurrent warps of the IC-STN (ignored by the other types).
        num_classes: output classes (43 for GTSRB).
        dropout: dropout before the last classifier layer (``large``, ``poster``).
        loc_input: what the localisation network of ``stn`` and ``icstn`` sees at r > 1: ``full``, the crop
            through the current warp at 36 px (rate 1), so only the transformer's *output* is downsampled (the
            setting of Jiang et al.'s downsampling experiment), or ``output``, the crop at S = 36 / r px like
            the classifier (checkpoints written before this option). Identical at r = 1; ``stn-c`` and
            ``stn-sl`` share the classifier's first layers and always work at S.
        loc_context: half-side, in canonical units, of the region around the current warp's crop that the
            localisation network of ``stn`` and ``icstn`` sees (at ``loc_size`` pixels): 1.0 = the crop
            itself (the paper's setting), 1.3 = 30% more on every side, so a network pulled towards the
            annotated sign box sees the box's edges even when they lie on or past the crop's border. The
            parameters do not depend on it (a fine-tuning run may change it).
    """

    model_type: str = "stn"
    arch: str = "large"
    warp_type: str = "homography"
    sampler: str = "linearized"
    eval_forward: str = "bilinear"
    num_samples: int = 8
    downsampling_rate: int = 1
    warp_n: int = 4
    num_classes: int = 43
    dropout: float = 0.0
    loc_input: str = "full"
    loc_context: float = 1.0

    def __post_init__(self) -> None:
        checks: list[tuple[str, object, tuple[object, ...]]] = [
            ("model_type", self.model_type, MODEL_TYPES),
            ("arch", self.arch, ARCHS),
            ("warp_type", self.warp_type, WARP_TYPES),
            ("sampler", self.sampler, SAMPLING_MODES),
            ("eval_forward", self.eval_forward, EVAL_FORWARDS),
            ("downsampling_rate", self.downsampling_rate, DOWNSAMPLING_RATES),
            ("loc_input", self.loc_input, LOC_INPUTS),
        ]
        for key, value, allowed in checks:
            if value not in allowed:
                raise ConfigError(f"model.{key} = {value!r}: expected one of {', '.join(map(str, allowed))}")
        if not 1.0 <= self.loc_context <= 2.0:
            raise ConfigError(f"model.loc_context = {self.loc_context}: expected 1 <= value <= 2")
        if self.loc_context != 1.0 and self.model_type not in ("stn", "icstn"):
            raise ConfigError("model.loc_context: only stn and icstn have a separate localisation input")
        if self.num_samples < 1:
            raise ConfigError(f"model.num_samples = {self.num_samples}: expected >= 1")
        if self.warp_n < 1:
            raise ConfigError(f"model.warp_n = {self.warp_n}: expected >= 1")
        if self.num_classes < 2:
            raise ConfigError(f"model.num_classes = {self.num_classes}: expected >= 2")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout = {self.dropout}: expected 0 <= dropout < 1")

    @property
    def crop_size(self) -> int:
        """S, the side of the transformer's output (the classifier's input)."""
        return crop_size(self.downsampling_rate)

    @property
    def loc_size(self) -> int:
        """Side of the crop the localisation network sees: 36 for ``stn`` and ``icstn`` with
        ``loc_input="full"``, else S (see ``loc_input``)."""
        full = self.loc_input == "full" and self.model_type in ("stn", "icstn")
        return CANONICAL_SIZE if full else self.crop_size

    @property
    def has_transformer(self) -> bool:
        """False for ``cnn``, which only samples the crop through the given initial warp."""
        return self.model_type != "cnn"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (what checkpoints and model cards store)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys raise :class:`ConfigError`.

        A dict without ``loc_input`` comes from a checkpoint written before the option existed, whose
        localisation network saw the crop at S: it rebuilds with ``loc_input="output"``.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model config key(s): {', '.join(unknown)}")
        return cls(**{"loc_input": "output", **data})
