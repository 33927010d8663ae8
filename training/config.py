"""The training configuration: typed dataclasses (model / data / optim / run), TOML files and overrides.

Resolution order: dataclass defaults < the TOML file (``--config``) < ``--set section.key=value`` overrides <
explicit CLI flags. The resolved config is written to ``<out>/config.json`` and stored in every checkpoint.
Importing this module does not import torch.
"""

from __future__ import annotations

import json
import tomllib
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from training.errors import ConfigError
from training.models.config import ModelConfig

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "onecycle", "constant")
ALIGN_TARGETS = ("roi", "identity")
"""Targets of the supervised alignment loss (training/alignment.py)."""
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and the IC-STN perturbation.

    Attributes:
        data_dir: GTSRB folder (packed arrays or official layout); None: $GTSRB_DATA_DIR, else
            ../shared/data/gtsrb.
        train_variant: packed training file variant (``compact``; None picks what exists).
        test_variant: packed test file variant (``lossless`` by default, the one every reported error uses).
        val_fraction: fraction of training *tracks* held out for validation (0 = train on everything).
        val_seed: seed of the track split (``data.split_by_track``); None uses ``run.seed``. The shipped
            recipes fix it (0), so every candidate, whatever its training seed, sees the same validation
            tracks.
        limit_train: use only this many training images (a seeded random subset), for tests and smoke runs.
        limit_test: use only the first N test images in the final evaluation.
        cache_dir: where decoded arrays are cached as .npy (None = no cache).
        perturbation_scale: std of each canonical corner's own displacement (canonical units, 1 = 18 px).
        translation_scale: std of the displacement shared by the 4 corners (canonical units).
        color_jitter: photometric augmentation (training/augment.py): std of each channel's log gain.
        blur_prob: probability that a training image is Gaussian-blurred.
        blur_max_sigma: largest blur sigma, in pixels of the 50x50 frame (at most 5/3).
        noise_std: std of additive pixel noise, 0..255 units.
        exposure_jitter: std of the log of a gain shared by the 3 channels (over-/under-exposure; bright
            gains clip at 255).
        saturation_jitter: std of the log of a per-image colour saturation factor.
        shadow_prob: probability that a training image gets a cast shadow (one straight soft edge through
            the sign; the dark side's gain is uniform in [shadow_min_gain, 0.9]).
        shadow_min_gain: darkest shadow gain, in (0, 0.9].
        rotation_deg: rotated GTSRB (Finnveden et al.; issue 5): every training image's pixels are rotated
            about the crop centre by an angle uniform in [-rotation_deg, rotation_deg] (fresh per batch,
            seeded; zeros fill the uncovered corners) before the model and its IC-STN perturbation, and the
            test and validation evaluations rotate their images the same way with fixed seeded angles
            (``evaluate.fixed_rotations``). 0 = off.
    """

    data_dir: str | None = None
    train_variant: str | None = None
    test_variant: str | None = "lossless"
    val_fraction: float = 0.05
    val_seed: int | None = None
    limit_train: int | None = None
    limit_test: int | None = None
    cache_dir: str | None = ".data/cache"
    perturbation_scale: float = 0.25
    translation_scale: float = 0.25
    color_jitter: float = 0.0
    blur_prob: float = 0.0
    blur_max_sigma: float = 1.5
    noise_std: float = 0.0
    exposure_jitter: float = 0.0
    saturation_jitter: float = 0.0
    shadow_prob: float = 0.0
    shadow_min_gain: float = 0.35
    rotation_deg: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.rotation_deg <= 180.0:
            raise ConfigError(f"data.rotation_deg = {self.rotation_deg}: expected 0 <= value <= 180")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction = {self.val_fraction}: expected 0 <= value < 1")
        for key in ("limit_train", "limit_test"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"data.{key} = {value}: expected a positive integer")
        for key in ("train_variant", "test_variant"):
            value = getattr(self, key)
            if value not in (None, "compact", "lossless"):
                raise ConfigError(f"data.{key} = {value!r}: expected compact, lossless or none")
        if self.perturbation_scale < 0 or self.translation_scale < 0:
            raise ConfigError("data.perturbation_scale and data.translation_scale must be >= 0")
        for key in ("color_jitter", "noise_std", "exposure_jitter", "saturation_jitter"):
            if getattr(self, key) < 0:
                raise ConfigError(f"data.{key} = {getattr(self, key)}: expected a value >= 0")
        for key in ("blur_prob", "shadow_prob"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"data.{key} = {getattr(self, key)}: expected 0 <= value <= 1")
        if not 0.0 < self.shadow_min_gain <= 0.9:
            raise ConfigError(f"data.shadow_min_gain = {self.shadow_min_gain}: expected 0 < value <= 0.9")
        if not 0.3 <= self.blur_max_sigma <= 5 / 3:
            raise ConfigError(f"data.blur_max_sigma = {self.blur_max_sigma}: expected 0.3 <= value <= 5/3")


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and schedule.

    Attributes:
        optimizer: ``adam``, ``adamw`` or ``sgd`` (Nesterov momentum).
        lr: peak learning rate of the classifier.
        loc_lr_scale: the localisation network's learning rate is ``lr * loc_lr_scale``.
        weight_decay: L2 (adam, sgd) or decoupled (adamw) weight decay.
        momentum: SGD momentum.
        schedule: ``cosine`` (linear warm-up then cosine to 0), ``onecycle`` or ``constant``.
        warmup_epochs: warm-up length for ``cosine`` (fraction of epochs allowed).
        epochs: number of passes over the training split.
        batch_size: images per step (per process under DDP).
        label_smoothing: cross-entropy label smoothing.
        grad_clip: clip the gradient norm to this value (None = no clipping).
        ema_decay: keep an exponential moving average of the weights (and BatchNorm statistics) with this
            decay per step; the saved model, the validation and the test evaluation use the average
            (None = off).
        align_weight: weight of the supervised alignment loss (training/alignment.py) added to the
            cross-entropy; 0 keeps the paper's unsupervised protocol.
        align_target: what the crop's corners are pulled towards: ``roi`` (GTSRB's annotated sign box, grown
            by ``align_margin_px``) or ``identity`` (the canonical box: the transformer only undoes the
            input's perturbation).
        align_margin_px: margin around the annotated box for ``align_target = "roi"``, 50x50-frame pixels.
    """

    optimizer: str = "adam"
    lr: float = 2e-3
    loc_lr_scale: float = 0.1
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_epochs: float = 0.5
    epochs: int = 10
    batch_size: int = 128
    label_smoothing: float = 0.0
    grad_clip: float | None = 5.0
    ema_decay: float | None = None
    align_weight: float = 0.0
    align_target: str = "roi"
    align_margin_px: float = 0.0

    def __post_init__(self) -> None:
        if self.align_weight < 0:
            raise ConfigError(f"optim.align_weight = {self.align_weight}: expected >= 0")
        if self.align_target not in ALIGN_TARGETS:
            raise ConfigError(
                f"optim.align_target = {self.align_target!r}: expected one of {', '.join(ALIGN_TARGETS)}"
            )
        if not -5.0 <= self.align_margin_px <= 10.0:
            raise ConfigError(f"optim.align_margin_px = {self.align_margin_px}: expected -5 <= value <= 10")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"optim.ema_decay = {self.ema_decay}: expected 0 < value < 1")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"optim.optimizer = {self.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}"
            )
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"optim.schedule = {self.schedule!r}: expected one of {', '.join(SCHEDULES)}")
        if self.lr <= 0:
            raise ConfigError(f"optim.lr = {self.lr}: expected > 0")
        if self.loc_lr_scale < 0:
            raise ConfigError(f"optim.loc_lr_scale = {self.loc_lr_scale}: expected >= 0")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("optim.epochs and optim.batch_size must be >= 1")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"optim.label_smoothing = {self.label_smoothing}: expected 0 <= value < 1")
        if self.warmup_epochs < 0:
            raise ConfigError(f"optim.warmup_epochs = {self.warmup_epochs}: expected >= 0")


@dataclass(frozen=True)
class RunConfig:
    """Where outputs go and how the run behaves.

    Attributes:
        out: output folder (config.json, metrics.jsonl, checkpoint.pt, model.pt, eval.json, plots/).
        seed: seeds torch, the data order and the perturbations.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        amp: mixed precision on CUDA (bf16 when supported, else fp16 with a grad scaler); ignored on CPU.
        threads: torch intra-op threads (None = torch's default).
        log_every: progress line every N steps when stderr is not a TTY.
        resume: checkpoint to resume from (``<out>/checkpoint.pt`` for a run that stopped).
        init_from: fine-tune: start from this ``model.pt`` / ``checkpoint.pt``'s weights (same architecture;
            the sampler and its eval forward may differ); the optimizer, schedule, weight average and step
            count start fresh. Exclusive with ``resume``.
        max_steps: stop after this many optimizer steps in total (tests, smoke runs).
        eval_seed: seed of the fixed test perturbations.
        final_eval: evaluate the final model on the test set (writes ``<out>/eval.json``).
        plots: write PNG plots at the end.
    """

    out: str = "runs/default"
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    threads: int | None = None
    log_every: int = 50
    resume: str | None = None
    init_from: str | None = None
    max_steps: int | None = None
    eval_seed: int = 1234
    final_eval: bool = True
    plots: bool = True

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ConfigError(f"run.device = {self.device!r}: expected one of {', '.join(DEVICES)}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"run.threads = {self.threads}: expected >= 1")
        if self.log_every < 1:
            raise ConfigError(f"run.log_every = {self.log_every}: expected >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"run.max_steps = {self.max_steps}: expected >= 1")
        if self.resume and self.init_from:
            raise ConfigError(
                "run.resume and run.init_from exclude each other "
                "(resume continues a run; init_from starts a new one)"
            )


@dataclass(frozen=True)
class TrainConfig:
    """The whole resolved configuration of a training run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able nested dict."""
        return asdict(self)

    def to_json(self) -> str:
        """Indented JSON of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


_SECTIONS: dict[str, type[Any]] = {
    "model": ModelConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "run": RunConfig,
}


def _field_types(cls: type[Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check/convert ``value`` to ``annotation`` (int, float, bool, str, or ``X | None``)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _coerce(key, value, args[0])
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key} = {value!r}: expected true or false")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key} = {value!r}: expected an integer")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} = {value!r}: expected an integer") from None
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key} = {value!r}: expected a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} = {value!r}: expected a number") from None
    if annotation is str:
        return str(value)
    raise ConfigError(f"{key}: unsupported type {annotation!r}")


def _apply(config: TrainConfig, section: str, key: str, value: Any) -> TrainConfig:
    if section not in _SECTIONS:
        raise ConfigError(f"unknown config section {section!r} (expected one of {', '.join(_SECTIONS)})")
    types_ = _field_types(_SECTIONS[section])
    if key not in types_:
        raise ConfigError(f"unknown config key {section}.{key} (known: {', '.join(sorted(types_))})")
    current = getattr(config, section)
    try:
        updated = replace(current, **{key: _coerce(f"{section}.{key}", value, types_[key])})
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{section}.{key} = {value!r}: {exc}") from None
    return replace(config, **{section: updated})


def apply_mapping(config: TrainConfig, mapping: dict[str, Any], *, source: str = "config") -> TrainConfig:
    """Apply a nested ``{section: {key: value}}`` mapping (a parsed TOML file); unknown keys: ConfigError."""
    for section, values in mapping.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: {section!r} must be a table like [{section}]")
        for key, value in values.items():
            config = _apply(config, section, key, value)
    return config


def load_config_file(path: str | Path, base: TrainConfig | None = None) -> TrainConfig:
    """Read a TOML (or JSON, by extension) config file over ``base`` (defaults when None)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        mapping = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot parse config file {path}: {exc}") from None
    return apply_mapping(base or TrainConfig(), mapping, source=str(path))


def parse_override(text: str) -> tuple[str, str, Any]:
    """Parse ``section.key=value`` (the value as TOML when it parses as TOML, else as a bare string)."""
    if "=" not in text:
        raise ConfigError(f"bad override {text!r}: expected section.key=value")
    dotted, raw = text.split("=", 1)
    parts = dotted.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"bad override key {dotted!r}: expected section.key (e.g. optim.lr)")
    try:
        value: Any = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return parts[0], parts[1], value


def toml_literal(value: object) -> str:
    """``value`` written as a TOML literal, for a ``section.key=value`` override (the inverse of
    :func:`parse_override`'s value parsing for booleans, strings and numbers)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def apply_overrides(config: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``--set section.key=value`` overrides in order."""
    for text in overrides:
        section, key, value = parse_override(text)
        config = _apply(config, section, key, value)
    return config


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Rebuild a :class:`TrainConfig` from :meth:`TrainConfig.to_dict` output (e.g. a checkpoint's)."""
    return apply_mapping(TrainConfig(), data, source="stored config")


def flatten(config: TrainConfig) -> dict[str, Any]:
    """``{"section.key": value}`` for every field (documentation, reproduce grids)."""
    out: dict[str, Any] = {}
    for section in _SECTIONS:
        obj = getattr(config, section)
        if is_dataclass(obj):
            for f in fields(obj):
                out[f"{section}.{f.name}"] = getattr(obj, f.name)
    return out
