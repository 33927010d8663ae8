"""Pydantic request and response models of the HTTP API (they make the OpenAPI schema and its examples)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

_IDENTITY_EXAMPLE: list[Any] = [[1.44, 0.0, 10.08], [0.0, 1.44, 10.08], [0.0, 0.0, 1.0]]


class ErrorBody(BaseModel):
    code: str = Field(description="stable machine-readable reason, e.g. invalid_image, overloaded")
    message: str = Field(description="what was wrong, for humans")
    request_id: str | None = Field(default=None, description="the X-Request-ID of the request")


class ErrorResponse(BaseModel):
    """Every error of the /v1 API and the admin routes."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "code": "invalid_image",
                        "message": "cannot identify the image (accepted formats: PNG, JPEG, WEBP, PPM, "
                        "GIF, BMP)",
                        "request_id": "4f1c2a9e0b7d4c3a",
                    }
                }
            ]
        }
    )

    error: ErrorBody


class V2Error(BaseModel):
    """Errors of the Open Inference Protocol routes (/v2), in that protocol's shape, plus the request id."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"error": "model 'nope' not found", "request_id": "4f1c2a9e0b7d4c3a"}]
        }
    )

    error: str
    request_id: str | None = Field(default=None, description="the X-Request-ID of the request")


class Prediction(BaseModel):
    class_id: int = Field(description="class index of the model's classes")
    name: str = Field(description="sign name from the model card")
    probability: float = Field(ge=0.0, le=1.0, description="softmax probability")


class Transform(BaseModel):
    """The predicted transform in the uploaded image's pixel coordinates (x right, y down, pixel edges at
    integers, pixel centres at +0.5)."""

    matrix: list[list[float]] = Field(
        description="3x3, maps output crop pixel coordinates (0..crop_size) to input image pixel coordinates "
        "(homogeneous, divide by the third coordinate); matrix[2][2] = 1"
    )
    network_warp: list[list[float]] = Field(
        description="3x3 raw network output: canonical crop -> input, in the 50x50 network frame"
    )
    corners: list[list[float]] = Field(
        description="the crop's corners (top-left, top-right, bottom-right, bottom-left), [x, y] input pixels"
    )
    scale: float = Field(
        description="sqrt(|det|) of the warp's Jacobian at the crop centre in the network frame; 1 = the "
        "canonical 36x36 box, > 1 a larger region of the image"
    )
    rotation_deg: float = Field(
        description="rotation at the crop centre, degrees; positive turns +x towards +y (clockwise on screen)"
    )
    crop_size: int = Field(description="pixels a side of the crop the matrix refers to")
    outside_fraction: float = Field(
        ge=0.0,
        le=1.0,
        description="share of the crop's area (the quadrilateral `corners`) lying outside the uploaded image "
        "[0, width] x [0, height], exact polygon clipping; 0 = wholly inside. The rendered crop is black "
        "(padding) there; a rising share across requests means inputs framed tighter than the model expects",
    )


class Timings(BaseModel):
    """Per-stage durations of this image, milliseconds."""

    decode_ms: float = Field(description="decode, EXIF orientation, RGB conversion, resize")
    queue_ms: float = Field(description="wait in the batch queue")
    inference_ms: float = Field(description="the onnxruntime call of the batch holding this image")
    encode_ms: float = Field(description="top-k, transform, crop rendering and encoding")
    total_ms: float = Field(description="from the request's body being read to this result")
    batch_size: int = Field(description="images in that onnxruntime call")


class ImageResult(BaseModel):
    filename: str | None = Field(default=None, description="the multipart file name, if any")
    model: str
    version: str
    width: int = Field(description="uploaded image width after EXIF orientation, pixels")
    height: int = Field(description="uploaded image height after EXIF orientation, pixels")
    predictions: list[Prediction] = Field(description="top-k classes, most probable first")
    transform: Transform | None = Field(description="null only if the predicted warp is degenerate")
    crop: str | None = Field(
        description="aligned crop rendered from the original image, crop_size a side, as a data URL in the "
        "`crop` format (JPEG by default); null when crop=none or the warp is degenerate"
    )
    timings: Timings


class ClassifyResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request_id": "4f1c2a9e0b7d4c3a",
                    "model": "stn-linearized",
                    "version": "1.0.0",
                    "results": [
                        {
                            "filename": "00042.png",
                            "model": "stn-linearized",
                            "version": "1.0.0",
                            "width": 52,
                            "height": 54,
                            "predictions": [
                                {"class_id": 14, "name": "Stop", "probability": 0.9981},
                                {"class_id": 17, "name": "No entry", "probability": 0.0011},
                            ],
                            "transform": {
                                "matrix": _IDENTITY_EXAMPLE,
                                "network_warp": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
                                "corners": [[7.28, 7.56], [44.72, 7.56], [44.72, 46.44], [7.28, 46.44]],
                                "scale": 1.0,
                                "rotation_deg": 0.0,
                                "crop_size": 128,
                                "outside_fraction": 0.0,
                            },
                            "crop": "data:image/jpeg;base64,/9j/4AAQSkZJRgABAQAAAQABAAD...",
                            "timings": {
                                "decode_ms": 0.4,
                                "queue_ms": 2.1,
                                "inference_ms": 1.8,
                                "encode_ms": 1.2,
                                "total_ms": 5.9,
                                "batch_size": 1,
                            },
                        }
                    ],
                }
            ]
        }
    )

    request_id: str | None
    model: str
    version: str
    results: list[ImageResult]


class ClassInfo(BaseModel):
    id: int
    name: str


class ModelCardResponse(BaseModel):
    """A loaded model's card: what it is, what it expects, how well it tested, which file is served."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "stn-linearized",
                    "version": "1.0.0",
                    "default": True,
                    "description": "STN, homography, trained with linearized multi-sampling",
                    "model_type": "stn",
                    "arch": "large",
                    "warp_type": "homography",
                    "sampler": {
                        "train": "linearized",
                        "inference": "bilinear",
                        "options": {"num_samples": 8},
                    },
                    "downsampling_rate": 1,
                    "num_classes": 43,
                    "classes": [{"id": 0, "name": "Speed limit (20km/h)"}],
                    "input": {"name": "image", "shape": [None, 3, 50, 50], "layout": "NCHW"},
                    "outputs": {"logits": {"name": "logits", "shape": [None, 43]}},
                    "canonical_crop": {"frame": [50, 50], "box": [7, 7, 43, 43]},
                    "test_error_clean": 0.004,
                    "test_error_perturbed": 0.011,
                    "metrics": {"test_error_clean": 0.004},
                    "onnx": {"file": "model.onnx", "opset": 17, "sha256": "9f2c..."},
                    "created": "2026-11-22T03:00:00Z",
                    "loaded_at": "2026-11-22T04:00:00Z",
                    "load_seconds": 0.12,
                    "providers": ["CPUExecutionProvider"],
                }
            ]
        }
    )

    name: str
    version: str
    default: bool = Field(description="served by POST /v1/classify")
    description: str
    model_type: str | None
    arch: str | None
    warp_type: str | None
    sampler: dict[str, Any] | None
    downsampling_rate: int | None
    num_classes: int
    classes: list[ClassInfo]
    input: dict[str, Any]
    outputs: dict[str, Any]
    canonical_crop: dict[str, Any]
    test_error_clean: float | None = Field(description="from metrics.test_error_clean, fraction in [0, 1]")
    test_error_perturbed: float | None = Field(description="from metrics.test_error_perturbed, fraction")
    metrics: dict[str, Any] | None
    onnx: dict[str, Any] = Field(description="file, opset and the sha256 of the served ONNX file")
    created: str | None
    loaded_at: str = Field(description="when this version was loaded, ISO 8601 UTC")
    load_seconds: float
    providers: list[str] = Field(description="onnxruntime execution providers in use")
    training: dict[str, Any] | None = Field(default=None, description="training facts (single-model route)")


class ModelList(BaseModel):
    default: str | None = Field(description="the default model's name")
    models: list[ModelCardResponse]


class ReloadResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "stn-linearized",
                    "status": "reloaded",
                    "version": "1.1.0",
                    "previous_version": "1.0.0",
                    "sha256": "9f2c...",
                    "load_seconds": 0.15,
                }
            ]
        }
    )

    model: str
    status: Literal["loaded", "reloaded"]
    version: str
    previous_version: str | None
    sha256: str
    load_seconds: float


# ---- Open Inference Protocol (KServe v2) ----


class V2ServerMetadata(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "stn-signs", "version": "0.1.0", "extensions": []}]}
    )

    name: str
    version: str
    extensions: list[str]


class V2Live(BaseModel):
    live: bool


class V2Ready(BaseModel):
    ready: bool


class V2ModelReady(BaseModel):
    name: str
    ready: bool


class V2TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "stn-linearized",
                    "versions": ["1.0.0"],
                    "platform": "onnxruntime_onnx",
                    "inputs": [{"name": "image", "datatype": "FP32", "shape": [-1, 3, 50, 50]}],
                    "outputs": [
                        {"name": "logits", "datatype": "FP32", "shape": [-1, 43]},
                        {"name": "warp", "datatype": "FP32", "shape": [-1, 3, 3]},
                        {"name": "crop", "datatype": "FP32", "shape": [-1, 3, 36, 36]},
                    ],
                }
            ]
        }
    )

    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]


class V2RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] = Field(description="row-major values, flat or nested")


class V2RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class V2InferRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "42",
                    "inputs": [
                        {"name": "image", "shape": [1, 3, 50, 50], "datatype": "FP32", "data": [128.0, "..."]}
                    ],
                    "outputs": [{"name": "logits"}],
                }
            ]
        }
    )

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[V2RequestInput] = Field(min_length=1)
    outputs: list[V2RequestOutput] | None = None


class V2ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[float]


class V2InferResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model_name": "stn-linearized",
                    "model_version": "1.0.0",
                    "id": "42",
                    "outputs": [
                        {"name": "logits", "shape": [1, 43], "datatype": "FP32", "data": [0.1, "..."]}
                    ],
                }
            ]
        }
    )

    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[V2ResponseOutput]
