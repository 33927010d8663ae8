"""The model-bundle contract between ``training/`` (writes bundles) and ``service/`` (loads them).

docs/model-bundle.md describes it in prose; this package is the executable copy both sides import: the card
model with its validation (:mod:`service.contract.card`), the one way to build a card (:func:`make_card`),
the file hashing (:func:`sha256_file`), the JSON Schema published as docs/model-card.schema.json
(:mod:`service.contract.schema`) and the polygon clipping both sides measure crops with
(:mod:`service.contract.polygons`).

It lives inside ``service`` because the service ships alone (the Docker image holds ``service/`` and
``models/`` only) and must carry the contract it enforces, while training installs the whole project and can
import it from here. It imports pydantic and NumPy only: never torch, onnxruntime, FastAPI, ``training`` or
the rest of ``service`` (``service/__init__.py`` is thin), so importing it from training costs nothing, and
training depends on the contract, never the reverse.
"""

from service.contract.card import (
    CARD_FILE,
    DEFAULT_MARKER,
    INPUT_NAME,
    NAME_PATTERN,
    ONNX_FILE,
    OUTPUT_NAMES,
    SCHEMA_VERSION,
    CardError,
    ModelCard,
    make_card,
    parse_card,
)
from service.contract.hashing import sha256_file

__all__ = [
    "CARD_FILE",
    "DEFAULT_MARKER",
    "INPUT_NAME",
    "NAME_PATTERN",
    "ONNX_FILE",
    "OUTPUT_NAMES",
    "SCHEMA_VERSION",
    "CardError",
    "ModelCard",
    "make_card",
    "parse_card",
    "sha256_file",
]
