"""Model bundles (docs/model-bundle.md, schema version 1): discovery, loading and validation.

The card's schema and its validation are the contract's (:mod:`service.contract`, which training's export
uses too); this module adds what serving needs on top. A bundle is a folder ``<models_dir>/<name>/`` holding
``model.json`` (the card) and ``model.onnx``. Loading checks, in order: the card parses and matches the
schema; the ONNX file exists and its sha256 equals the card's; onnxruntime builds a session; the graph has the
declared input and outputs; a probe batch returns ``logits`` (N, num_classes), ``warp`` (N, 3, 3) and ``crop``
(N, 3, S, S) with finite values. Any failure is a :class:`~service.errors.BundleError` naming the file and
the check.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service.contract import (
    CARD_FILE,
    DEFAULT_MARKER,
    NAME_PATTERN,
    SCHEMA_VERSION,
    CardError,
    ModelCard,
    parse_card,
    sha256_file,
)
from service.errors import BundleError

__all__ = [
    "CARD_FILE",
    "DEFAULT_MARKER",
    "NAME_PATTERN",
    "SCHEMA_VERSION",
    "Bundle",
    "ModelCard",
    "check_name",
    "discover",
    "load_bundle",
    "read_card",
    "resolve_default",
    "sha256_file",
]


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
    try:
        card = parse_card(raw)
    except CardError as exc:
        raise BundleError(f"{path}: {exc}") from exc
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
