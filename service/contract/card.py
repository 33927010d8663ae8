"""``model.json``, the model card (docs/model-bundle.md, schema version 1): its model, validation and builder.

Known fields are typed; unknown ones are kept (the service shows them on the model card) rather than refused.
The service relies on ``name``, ``version``, ``classes``, ``input``, ``outputs``, ``canonical_crop`` and
``onnx.sha256``; the rest is optional for it. ``metrics`` and ``training`` stay plain dicts after validation
(typed dicts), so a card's figures are served exactly as written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator, with_config
from typing_extensions import TypedDict

SCHEMA_VERSION = 1
CARD_FILE = "model.json"
ONNX_FILE = "model.onnx"
DEFAULT_MARKER = "DEFAULT"
"""The model repository's default marker: a file holding one bundle folder name."""
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
"""Bundle (folder) names: letters, digits, '.', '_' and '-', no path parts."""
INPUT_NAME = "image"
OUTPUT_NAMES = ("logits", "warp", "crop")

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
"""An error rate in [0, 1]."""


class CardError(ValueError):
    """A card that does not match the contract; the message names the fields and what is wrong."""


class _Strictish(BaseModel):
    """Known fields are typed; unknown ones are kept (shown on the model card) rather than refused."""

    model_config = ConfigDict(extra="allow", frozen=True)


_OPEN = ConfigDict(extra="allow")


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
    file: str = ONNX_FILE
    opset: int | None = None
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")


class SamplerSpec(_Strictish):
    train: str | None = None
    inference: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


@with_config(_OPEN)
class Perturbation(TypedDict, total=False):
    """The fixed IC-STN perturbation of the perturbed figures (canonical units, seeded)."""

    scale: float
    translation_scale: float
    seed: int


@with_config(_OPEN)
class AlignmentFigures(TypedDict, total=False):
    """Crop alignment against the annotated sign boxes over one pass (training/alignment.py)."""

    iou_median: float
    iou_p5: float
    share_iou_ge_0_7: float
    mean_corner_px: float
    share_outside_gt_10pct: float


@with_config(_OPEN)
class AlignmentSummary(TypedDict, total=False):
    """``metrics.alignment``: the clean and perturbed passes' alignment figures and what they compare to."""

    clean: AlignmentFigures
    perturbed: AlignmentFigures
    reference: str | None


@with_config(_OPEN)
class ValidationMetrics(TypedDict, total=False):
    """``metrics.validation``: figures on the held-out training tracks the recipe was chosen on."""

    set: str
    num_images: Annotated[int, Field(ge=0)]
    error_clean: Fraction
    error_perturbed: Fraction
    split: dict[str, Any]
    alignment: AlignmentSummary


@with_config(_OPEN)
class Metrics(TypedDict, total=False):
    """``metrics``: the test figures, measured with the graph's inference forward."""

    test_set: str
    num_images: Annotated[int, Field(ge=0)]
    test_error_clean: Fraction
    test_error_perturbed: Fraction
    perturbation: Perturbation
    inference_forward: str
    num_parameters: Annotated[int, Field(ge=0)]
    alignment: AlignmentSummary
    validation: ValidationMetrics


@with_config(_OPEN)
class Lineage(TypedDict, total=False):
    """``training.fine_tuned_from``: the checkpoint a fine-tuning run started from, recursively."""

    path: str | None
    sha256: str | None
    epochs: int | None
    wall_time_s: float | None
    fine_tuned_from: Lineage | None


@with_config(_OPEN)
class Training(TypedDict, total=False):
    """``training``: the resolved training config and the facts of the run (this run alone)."""

    config: dict[str, Any]
    device: str | None
    wall_time_s: float | None
    epochs: int | None
    torch_version: str | None
    fine_tuned_from: Lineage


class ModelCard(_Strictish):
    """``model.json``. The service relies on name, version, classes, input, outputs, canonical_crop and
    onnx.sha256; the other fields are optional here and shown as they are on the model card."""

    model_config = ConfigDict(
        extra="allow",
        frozen=True,
        title="model.json (model bundle schema version 1)",
        json_schema_extra={"description": "The model card of a bundle; see docs/model-bundle.md."},
    )

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
    metrics: Metrics | None = None
    training: Training | None = None
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


def parse_card(raw: object) -> ModelCard:
    """Validate a parsed ``model.json`` against the contract.

    Raises:
        CardError: not a JSON object, an unsupported ``schema_version``, or fields that do not match (the
            message lists each field's dotted path and the problem).
    """
    if not isinstance(raw, dict):
        raise CardError(f"expected a JSON object, got {type(raw).__name__}")
    if raw.get("schema_version") != SCHEMA_VERSION:
        raise CardError(
            f"schema_version {raw.get('schema_version')!r} is not supported (expected {SCHEMA_VERSION})"
        )
    try:
        return ModelCard.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(card)'}: {err['msg']}" for err in exc.errors()
        )
        raise CardError(f"does not match the bundle schema: {problems}") from exc


def make_card(
    *,
    name: str,
    version: str,
    created: str | None,
    description: str,
    model_type: str | None,
    arch: str | None,
    warp_type: str | None,
    sampler: Mapping[str, Any] | None,
    downsampling_rate: int | None,
    class_names: Sequence[str],
    resize: Mapping[str, Any],
    box: Sequence[float],
    crop_side: int,
    onnx_sha256: str,
    opset: int | None,
    metrics: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``model.json`` dict of a bundle, validated (:func:`parse_card`) before it is returned.

    The graph's input and outputs follow the contract: input :data:`INPUT_NAME` (N, 3, H, W) float32 RGB
    0..255 resized as ``resize`` says, outputs ``logits`` (N, C), ``warp`` (N, 3, 3) in the W x H pixel frame
    and ``crop`` (N, 3, S, S), the canonical crop ``box`` of that frame.

    Args:
        resize: the ``input.resize`` entry (library, method, width, height, keep_aspect_ratio).
        box: the canonical crop (x0, y0, x1, y1) in frame pixels, edges at integers.
        crop_side: S, the side of the network's own crop output.
        metrics, training: the optional ``metrics`` and ``training`` entries (left out when None).

    Returns:
        the card as a plain JSON-able dict, in the key order the bundle files use.

    Raises:
        CardError: the card does not match the contract.
    """
    width, height = int(resize["width"]), int(resize["height"])
    k = len(class_names)
    card: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "version": version,
        "created": created,
        "description": description,
        "model_type": model_type,
        "arch": arch,
        "warp_type": warp_type,
        "sampler": None if sampler is None else dict(sampler),
        "downsampling_rate": downsampling_rate,
        "num_classes": k,
        "classes": [{"id": i, "name": class_names[i]} for i in range(k)],
        "input": {
            "name": INPUT_NAME,
            "shape": [None, 3, height, width],
            "layout": "NCHW",
            "dtype": "float32",
            "color": "RGB",
            "value_range": [0, 255],
            "resize": dict(resize),
        },
        "outputs": {
            "logits": {"name": "logits", "shape": [None, k]},
            "warp": {
                "name": "warp",
                "shape": [None, 3, 3],
                "frame": f"{width}x{height} pixel edges, canonical crop -> input",
            },
            "crop": {"name": "crop", "shape": [None, 3, crop_side, crop_side]},
        },
        "canonical_crop": {"frame": [width, height], "box": list(box)},
    }
    if metrics is not None:
        card["metrics"] = dict(metrics)
    if training is not None:
        card["training"] = dict(training)
    card["onnx"] = {"file": ONNX_FILE, "opset": opset, "sha256": onnx_sha256}
    parse_card(card)
    return card
