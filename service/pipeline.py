"""The classification request path as plain steps: decode, (batched) inference, post-process.

``decode_step`` and ``postprocess_step`` are synchronous functions the route runs in the decode executor; the
route submits the decoded tensors to the model's batcher in between. None of them knows about HTTP.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

from service.bundles import ModelCard
from service.errors import InvalidImage
from service.geometry import crop_transform
from service.imaging import decode_image, png_data_url, preprocess, render_crop
from service.inference import ImageOutputs
from service.schemas import ImageResult, Prediction, Timings, Transform


@dataclass(frozen=True)
class Upload:
    """One uploaded file: its bytes and, for multipart parts, its file name."""

    data: bytes
    filename: str | None = None


@dataclass(frozen=True)
class DecodedImage:
    """An upload decoded to RGB at its original resolution, and its network input.

    Attributes:
        image: RGB Pillow image (W, H), EXIF-oriented.
        tensor: (3, h, w) float32 0..255, the bundle's resize of ``image``.
        decode_seconds: decode + orientation + conversion + resize.
    """

    filename: str | None
    image: Image.Image
    tensor: npt.NDArray[np.float32]
    decode_seconds: float


def decode_step(upload: Upload, card: ModelCard, max_pixels: int) -> DecodedImage:
    """Decode an upload and build its network input with the card's declared resize.

    Raises:
        InvalidImage: naming the file, see :func:`service.imaging.decode_image`.
    """
    start = time.perf_counter()
    try:
        image = decode_image(upload.data, max_pixels=max_pixels)
    except InvalidImage as exc:
        if upload.filename is not None:
            raise InvalidImage(f"file {upload.filename!r}: {exc.message}", code=exc.code) from exc
        raise
    tensor = preprocess(image, card.input_size, card.input.resize.method)
    return DecodedImage(
        filename=upload.filename, image=image, tensor=tensor, decode_seconds=time.perf_counter() - start
    )


def softmax(logits: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Softmax of (C,) or (N, C) logits over the last axis, in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def top_k(probabilities: npt.NDArray[np.float64], k: int, names: list[str]) -> list[Prediction]:
    """The ``k`` most probable classes of a (C,) probability vector, most probable first (ties: lower id)."""
    k = max(1, min(k, probabilities.shape[0]))
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [Prediction(class_id=int(i), name=names[i], probability=float(probabilities[i])) for i in order]


def postprocess_step(
    decoded: DecodedImage,
    outputs: ImageOutputs,
    *,
    model_name: str,
    card: ModelCard,
    k: int,
    crop: bool,
    crop_size: int,
    request_start: float,
) -> tuple[ImageResult, float, float]:
    """Top-k, the transform in the original image's pixels and the aligned crop from the original image.

    Returns:
        The result, the top-1 probability and the encode duration in seconds.
    """
    start = time.perf_counter()
    probabilities = softmax(outputs.logits)
    predictions = top_k(probabilities, k, card.class_names)
    transform = crop_transform(
        outputs.warp,
        image_size=decoded.image.size,
        crop_size=crop_size,
        frame=card.input_size,
        box=card.canonical_crop.box,
    )
    transform_out: Transform | None = None
    crop_url: str | None = None
    if transform is not None:
        transform_out = Transform(
            matrix=transform.image_from_crop.tolist(),
            network_warp=np.asarray(outputs.warp, dtype=np.float64).tolist(),
            corners=transform.corners.tolist(),
            scale=transform.scale,
            rotation_deg=transform.rotation_deg,
            crop_size=crop_size,
        )
        if crop:
            crop_url = png_data_url(render_crop(decoded.image, transform.image_from_crop, crop_size))
    encode_seconds = time.perf_counter() - start
    width, height = decoded.image.size
    result = ImageResult(
        filename=decoded.filename,
        model=model_name,
        version=card.version,
        width=width,
        height=height,
        predictions=predictions,
        transform=transform_out,
        crop=crop_url,
        timings=Timings(
            decode_ms=decoded.decode_seconds * 1000.0,
            queue_ms=outputs.queue_seconds * 1000.0,
            inference_ms=outputs.inference_seconds * 1000.0,
            encode_ms=encode_seconds * 1000.0,
            total_ms=(time.perf_counter() - request_start) * 1000.0,
            batch_size=outputs.batch_size,
        ),
    )
    return result, float(probabilities.max()), encode_seconds
