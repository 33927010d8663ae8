"""Model bundles (docs/model-bundle.md, schema version 1): the card schema, discovery, loading and validation.

A bundle is a folder ``<models_dir>/<name>/`` holding ``model.json`` (the card) and ``model.onnx``. Loading
checks, in order: the card parses and matches the schema; the ONNX file exists and its sha256 equals the
card's; onnxruntime builds a session; the graph has the declared input and outputs; a probe batch returns
``logits`` (N, num_classes), ``warp`` (N, 3, 3) and ``crop`` (N, 3, S, S) with finite values. Any failure is a
:class:`~service.errors.BundleError` naming the file and the check.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.errors import BundleError

CARD_FILE = "model.json"
DEFAULT_MARKER = "DEFAULT"
SCHEMA_VERSION = 1
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class _Strictish(BaseModel):
    """Known fields are typed; unknown ones are kept (shown on the model card) rather than refused."""

    model_config = ConfigDict(extra="allow", frozen=True)


class ClassEntry(_Strictish):
    id: int = Field(ge=0)
    name: str


class ResizeSpec(_Strictish):
    library: Literal["Pillow"]
    method: Literal["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"]
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    keep_aspect_ratio: Literal[False]


class InputSpec(_Strictish):
    name: str
    shape: list[int | None] = Field(min_length=4, max_length=4)
    layout: Literal["NCHW"]
    dtype: Literal["float32"]
    color: Literal["RGB"]
    value_range: tuple[float, float]
    resize: ResizeSpec


class OutputSpec(_Strictish):
    name: str
    shape: list[int | None]


class OutputsSpec(_Strictish):
    logits: OutputSpec
    warp: OutputSpec
    crop: OutputSpec


class CanonicalCrop(_Strictish):
    frame: tuple[int, int]
    box: tuple[float, float, float, float]


class OnnxSpec(_Strictish):
    file: str = "model.onnx"
    opset: int | None = None
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")


class SamplerSpec(_Strictish):
    train: str | None = None
    inference: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class ModelCard(_Strictish):
    """``model.json``. The service relies on name, version, classes, input, outputs, canonical_crop and
    onnx.sha256; the other fields are optional here and shown as they are on the model card."""

    schema_version: Literal[1]
    name: str
    version: str
    created: str | None = None
    description: str = ""
    model_type: str | None = None
    arch: str | None = None
    warp_type: str | None = None
    sampler: SamplerSpec | None = None
    downsampling_rate: int | None = None
    num_classes: int | None = None
    classes: list[ClassEntry] = Field(min_length=1)
    input: InputSpec
    outputs: OutputsSpec
    canonical_crop: CanonicalCrop
    metrics: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    onnx: OnnxSpec

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        ids = [c.id for c in self.classes]
        if ids != list(range(len(ids))):
            raise ValueError(f"classes must have ids 0..{len(ids) - 1} in order, got {ids[:5]}...")
        if self.num_classes is not None and self.num_classes != len(self.classes):
            raise ValueError(f"num_classes is {self.num_classes} but {len(self.classes)} classes are listed")
        channels, height, width = self.input.shape[1:]
        resize = self.input.resize
        if channels != 3 or (height, width) != (resize.height, resize.width):
            raise ValueError(
                f"input.shape {self.input.shape} does not match 3 x resize {resize.height}x{resize.width}"
            )
        if tuple(self.canonical_crop.frame) != (resize.width, resize.height):
            raise ValueError(
                f"canonical_crop.frame {self.canonical_crop.frame} differs from the input size "
                f"{resize.width}x{resize.height}"
            )
        x0, y0, x1, y1 = self.canonical_crop.box
        if not (x1 > x0 and y1 > y0):
            raise ValueError(f"canonical_crop.box {self.canonical_crop.box} is empty")
        if "/" in self.onnx.file or "\\" in self.onnx.file or self.onnx.file in {"", ".", ".."}:
            raise ValueError(f"onnx.file must be a file name inside the bundle, got {self.onnx.file!r}")
        if len(self.outputs.crop.shape) != 4 or len(self.outputs.logits.shape) != 2:
            raise ValueError("outputs.logits must be (N, C) and outputs.crop (N, 3, S, S)")
        return self

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) of the network frame."""
        return self.input.resize.width, self.input.resize.height

    @property
    def crop_side(self) -> int | None:
        """S of the network's own crop output, when the card declares it."""
        return self.outputs.crop.shape[-1]

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid bundle folder name (letters, digits, '.', '_', '-'; no path parts)."""
    if not NAME_PATTERN.match(name) or name in {".", ".."}:
        raise BundleError(f"invalid model name {name!r}: use letters, digits, '.', '_' and '-'")
    return name


def read_card(folder: Path) -> ModelCard:
    """Parse and validate ``folder/model.json``; the folder's name must equal the card's ``name``."""
    path = folder / CARD_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BundleError(f"{path}: missing") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise BundleError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    if raw.get("schema_version") != SCHEMA_VERSION:
        raise BundleError(
            f"{path}: schema_version {raw.get('schema_version')!r} is not supported "
            f"(expected {SCHEMA_VERSION})"
        )
    try:
        card = ModelCard.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(card)'}: {err['msg']}" for err in exc.errors()
        )
        raise BundleError(f"{path}: does not match the bundle schema: {problems}") from exc
    if card.name != folder.name:
        raise BundleError(f"{path}: name {card.name!r} differs from the bundle folder name {folder.name!r}")
    return card


def discover(models_dir: Path) -> list[str]:
    """Names of the bundle folders in ``models_dir`` (sub-folders holding a model.json), sorted."""
    if not models_dir.is_dir():
        return []
    return sorted(
        p.name
        for p in models_dir.iterdir()
        if p.is_dir() and (p / CARD_FILE).is_file() and NAME_PATTERN.match(p.name)
    )


def resolve_default(models_dir: Path, setting: str | None, available: list[str]) -> str | None:
    """The default model's name: the setting, else ``models_dir/DEFAULT``, else the first of ``available``."""
    if setting:
        return setting
    marker = models_dir / DEFAULT_MARKER
    if marker.is_file():
        name = marker.read_text(encoding="utf-8").strip()
        if name:
            return name
    return available[0] if available else None


SessionFactory = Callable[[Path], Any]
"""Builds an onnxruntime ``InferenceSession`` from a model path (:func:`service.inference.create_session`)."""


@dataclass
class Bundle:
    """A validated bundle: its card, the live onnxruntime session and load facts."""

    name: str
    path: Path
    card: ModelCard
    session: Any
    sha256: str
    load_seconds: float
    providers: list[str]
    loaded_at: float = field(default_factory=time.time)

    @property
    def version(self) -> str:
        return self.card.version


def load_bundle(folder: Path, session_factory: SessionFactory, probe_batch: int = 2) -> Bundle:
    """Load and fully check one bundle folder; see the module docstring for the checks.

    Args:
        folder: ``<models_dir>/<name>``.
        session_factory: builds the onnxruntime session from the ONNX path.
        probe_batch: images of the probe run (mid-grey), checking the output shapes with a batch > 1.

    Raises:
        BundleError: the first failed check, naming the file.
    """
    start = time.perf_counter()
    name = check_name(folder.name)
    if not folder.is_dir():
        raise BundleError(f"{folder}: no such bundle folder")
    card = read_card(folder)
    onnx_path = folder / card.onnx.file
    if not onnx_path.is_file():
        raise BundleError(f"{onnx_path}: missing (model.json names onnx.file {card.onnx.file!r})")
    digest = sha256_file(onnx_path)
    if digest.lower() != card.onnx.sha256.lower():
        raise BundleError(
            f"{onnx_path}: sha256 {digest} does not match model.json onnx.sha256 {card.onnx.sha256.lower()}"
        )
    try:
        session = session_factory(onnx_path)
    except Exception as exc:  # onnxruntime raises its own exception types for corrupt graphs
        raise BundleError(f"{onnx_path}: onnxruntime cannot load it: {exc}") from exc
    check_graph(session, card, onnx_path)
    probe_outputs(session, card, onnx_path, probe_batch)
    providers = list(session.get_providers())
    return Bundle(
        name=name,
        path=folder,
        card=card,
        session=session,
        sha256=digest,
        load_seconds=time.perf_counter() - start,
        providers=providers,
    )


def check_graph(session: Any, card: ModelCard, onnx_path: Path) -> None:
    """Check the session's declared input and output names and ranks against the card."""
    inputs = {i.name: i for i in session.get_inputs()}
    if card.input.name not in inputs:
        raise BundleError(f"{onnx_path}: graph has no input {card.input.name!r} (inputs: {sorted(inputs)})")
    shape = inputs[card.input.name].shape
    if len(shape) != 4 or [d if isinstance(d, int) else None for d in shape[1:]] not in (
        list(card.input.shape[1:]),
        [None, None, None],
    ):
        raise BundleError(
            f"{onnx_path}: input {card.input.name!r} has shape {shape}, card says {card.input.shape}"
        )
    outputs = {o.name for o in session.get_outputs()}
    for spec in (card.outputs.logits, card.outputs.warp, card.outputs.crop):
        if spec.name not in outputs:
            raise BundleError(f"{onnx_path}: graph has no output {spec.name!r} (outputs: {sorted(outputs)})")


def expected_shapes(card: ModelCard, batch: int) -> dict[str, tuple[int, ...]]:
    """The output shapes a batch of ``batch`` images must produce, by output name."""
    side = card.crop_side
    crop_shape = (batch, 3, side, side) if isinstance(side, int) else (batch, 3, -1, -1)
    return {
        card.outputs.logits.name: (batch, len(card.classes)),
        card.outputs.warp.name: (batch, 3, 3),
        card.outputs.crop.name: crop_shape,
    }


def shape_matches(actual: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    """Whether ``actual`` equals ``expected`` where ``expected`` is not -1 (any size)."""
    return len(actual) == len(expected) and all(e in (-1, a) for a, e in zip(actual, expected, strict=True))


def probe_outputs(session: Any, card: ModelCard, onnx_path: Path, batch: int) -> None:
    """Run ``batch`` mid-grey images through the session and check every output's shape and finiteness."""
    width, height = card.input_size
    probe = np.full((batch, 3, height, width), 127.5, dtype=np.float32)
    names = [card.outputs.logits.name, card.outputs.warp.name, card.outputs.crop.name]
    try:
        results = session.run(names, {card.input.name: probe})
    except Exception as exc:  # onnxruntime's own error types
        raise BundleError(f"{onnx_path}: a probe batch of {batch} images fails: {exc}") from exc
    expected = expected_shapes(card, batch)
    for out_name, value in zip(names, results, strict=True):
        array = np.asarray(value)
        if not shape_matches(array.shape, expected[out_name]):
            raise BundleError(
                f"{onnx_path}: output {out_name!r} has shape {tuple(array.shape)} for a batch of {batch}, "
                f"expected {expected[out_name]} (-1: any)"
            )
        if not np.all(np.isfinite(array)):
            raise BundleError(f"{onnx_path}: output {out_name!r} is not finite on a mid-grey probe batch")
