"""The request path as plain steps: open, decode, (batched) inference, post-process.

``open_step`` reads an upload's header (cheap); ``load_step`` decodes its pixels and ``postprocess_step``
builds its result: synchronous functions the classify route runs on the event loop for small images and in
the decode executor for large ones (``SERVICE_INLINE_MAX_PIXELS``). In between, :func:`infer_step` submits
the network inputs to the model's batcher and awaits them; ``/v1`` classify and ``/v2`` infer share that one
inference step (submit, deadline, cancel, output checks). Results are plain dicts in the shape of
:class:`service.schemas.ImageResult`, serialised once by the route. None of them knows about HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from service.bundles import ModelCard
from service.errors import InvalidImage, NonFiniteOutput, RequestTimeout
from service.geometry import CropTransform, crop_transform
from service.imaging import DEFAULT_CROP_QUALITY, load_image, open_image, preprocess, render_and_encode_crop
from service.inference import ImageOutputs, Reservation


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


@dataclass(frozen=True)
class OpenedUpload:
    """An upload whose header was read and checked (:func:`open_step`); its pixels are not decoded yet.

    Attributes:
        image: the opened Pillow image, not loaded; :func:`load_step` decodes and closes it.
        started: ``time.perf_counter()`` when opening began (for ``decode_seconds``).
    """

    filename: str | None
    image: Image.Image
    started: float

    @property
    def pixels(self) -> int:
        """Declared width x height, before EXIF orientation."""
        width, height = self.image.size
        return width * height


@contextlib.contextmanager
def _naming(filename: str | None) -> Iterator[None]:
    """Prefix the message of an :class:`InvalidImage` raised in the block with the multipart file name."""
    try:
        yield
    except InvalidImage as exc:
        if filename is None:
            raise
        raise InvalidImage(f"file {filename!r}: {exc.message}", code=exc.code) from exc


def open_step(upload: Upload, max_pixels: int) -> OpenedUpload:
    """Read and check an upload's header (:func:`service.imaging.open_image`); cheap at any image size.

    Raises:
        InvalidImage: naming the file.
    """
    started = time.perf_counter()
    with _naming(upload.filename):
        image = open_image(upload.data, max_pixels=max_pixels)
    return OpenedUpload(filename=upload.filename, image=image, started=started)


def load_step(opened: OpenedUpload, card: ModelCard) -> DecodedImage:
    """Decode an opened upload (:func:`service.imaging.load_image`) and build its network input with the
    card's declared resize.

    Raises:
        InvalidImage: naming the file.
    """
    with _naming(opened.filename):
        image = load_image(opened.image)
    tensor = preprocess(image, card.input_size, card.input.resize.method)
    return DecodedImage(
        filename=opened.filename,
        image=image,
        tensor=tensor,
        decode_seconds=time.perf_counter() - opened.started,
    )


def decode_step(upload: Upload, card: ModelCard, max_pixels: int) -> DecodedImage:
    """:func:`open_step` then :func:`load_step`: an upload decoded, with its network input.

    Raises:
        InvalidImage: naming the file, see :func:`service.imaging.decode_image`.
    """
    return load_step(open_step(upload, max_pixels), card)


@dataclass(frozen=True)
class Deadline:
    """A request's time limit: ``timeout_s`` from :meth:`start` on, as an event-loop time.

    Attributes:
        at: the event loop's ``time()`` by which the request must be done.
        timeout_s: the whole budget (``SERVICE_REQUEST_TIMEOUT_S``), for the error message.
    """

    at: float
    timeout_s: float

    @classmethod
    def start(cls, timeout_s: float) -> Deadline:
        """A deadline ``timeout_s`` from now (call it in the event loop)."""
        return cls(at=asyncio.get_running_loop().time() + timeout_s, timeout_s=timeout_s)

    @contextlib.asynccontextmanager
    async def bound(self) -> AsyncIterator[None]:
        """Run the block until the deadline at most; past it, the block is cancelled.

        Raises:
            RequestTimeout: the deadline passed inside the block (504).
        """
        try:
            async with asyncio.timeout_at(self.at):
                yield
        except TimeoutError as exc:
            raise RequestTimeout(
                f"the request did not finish within {self.timeout_s} s (SERVICE_REQUEST_TIMEOUT_S)"
            ) from exc


def require_finite(name: str, array: npt.ArrayLike, index: int | None = None) -> None:
    """Refuse to answer with a non-finite model output (JSON has no NaN nor infinity).

    Args:
        name: the output's name (``logits``, ``warp``, ``crop``), for the message.
        array: the output (one image's or the whole batch's).
        index: the image's position in the request, when ``array`` is one image's.

    Raises:
        NonFiniteOutput: some value is NaN or infinite (422; 400 on /v2).
    """
    values = np.asarray(array)
    if np.all(np.isfinite(values)):
        return
    where = f" for image {index}" if index is not None else ""
    raise NonFiniteOutput(
        f"the model's output {name!r}{where} is not finite (NaN or infinity), so it cannot be sent as JSON; "
        "the input is probably far from the images the model was trained on"
    )


async def infer_step(
    reservation: Reservation, tensors: list[npt.NDArray[np.float32]], *, deadline: Deadline, logits_name: str
) -> list[ImageOutputs]:
    """Run network inputs through the model's batcher: submit, await within the deadline, then cancel.

    Every route that runs a model goes through this step. The images join the model's dynamic batches;
    whatever happens (deadline passed, client gone, an error), the futures are cancelled on the way out, so
    images still queued leave the queue at once and never run (cancelling a done future does nothing).

    Args:
        reservation: the request's admission on the model version (:meth:`LoadedModel.use`).
        tensors: (3, H, W) float32 network inputs.
        deadline: the request's deadline.
        logits_name: the card's name of the logits output, for the error message.

    Returns:
        One :class:`ImageOutputs` per tensor, in order.

    Raises:
        RequestTimeout: not done by the deadline (504).
        Overloaded, NotReady: the batcher refused the images (503).
        InferenceError: onnxruntime failed (500).
        NonFiniteOutput: an image's logits are not finite (422).
    """
    futures = reservation.submit(tensors)
    try:
        async with deadline.bound():
            outputs = list(await asyncio.gather(*futures))
    finally:
        for future in futures:
            future.cancel()  # no-op when done; frees the queue slot of a timed-out or cancelled request
    for index, output in enumerate(outputs):
        require_finite(logits_name, output.logits, index)
    return outputs


def softmax(logits: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Softmax of (C,) or (N, C) logits over the last axis, in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def top_k(probabilities: npt.NDArray[np.float64], k: int, names: list[str]) -> list[dict[str, Any]]:
    """The ``k`` most probable classes of a (C,) probability vector, most probable first (ties: lower id),
    as :class:`service.schemas.Prediction` dicts."""
    k = max(1, min(k, probabilities.shape[0]))
    order = np.argsort(-probabilities, kind="stable")[:k].tolist()
    values = probabilities[order].tolist()
    return [{"class_id": i, "name": names[i], "probability": p} for i, p in zip(order, values, strict=True)]


@dataclass(frozen=True)
class ImageAnswer:
    """One image's result and what the metrics record about it.

    Attributes:
        result: the :class:`service.schemas.ImageResult` of the image, as a dict ready for JSON.
        class_id: the top-1 class.
        confidence: its probability.
        transform: the predicted transform in the image's pixels; None when the warp is degenerate.
        encode_seconds: top-k, transform and crop rendering/encoding.
    """

    result: dict[str, Any]
    class_id: int
    confidence: float
    transform: CropTransform | None
    encode_seconds: float


def postprocess_step(
    decoded: DecodedImage,
    outputs: ImageOutputs,
    *,
    model_name: str,
    card: ModelCard,
    k: int,
    crop_format: str,
    crop_size: int,
    request_start: float,
    crop_quality: int = DEFAULT_CROP_QUALITY,
) -> ImageAnswer:
    """Top-k, the transform in the original image's pixels and the aligned crop from the original image.

    Args:
        decoded: the decoded upload.
        outputs: the network's outputs for it.
        model_name: the served model's name.
        card: its model card.
        k: number of classes returned.
        crop_format: ``none`` (no crop) or a format of :func:`service.imaging.encode_crop`.
        crop_size: pixels a side of the crop (and of the transform's crop frame).
        request_start: ``time.perf_counter()`` when the request's body was read.
        crop_quality: JPEG and WebP quality.

    Returns:
        The image's :class:`ImageAnswer`; its ``result`` validates as :class:`service.schemas.ImageResult`
        (tests check every response against the schema).
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
    transform_out: dict[str, Any] | None = None
    crop_url: str | None = None
    if transform is not None:
        transform_out = {
            "matrix": transform.image_from_crop.tolist(),
            "network_warp": np.asarray(outputs.warp, dtype=np.float64).tolist(),
            "corners": transform.corners.tolist(),
            "scale": transform.scale,
            "rotation_deg": transform.rotation_deg,
            "crop_size": crop_size,
            "outside_fraction": transform.outside_fraction,
        }
        if crop_format != "none":
            crop_url = render_and_encode_crop(
                decoded.image, transform.image_from_crop, crop_size, crop_format, crop_quality
            )
    encode_seconds = time.perf_counter() - start
    width, height = decoded.image.size
    result = {
        "filename": decoded.filename,
        "model": model_name,
        "version": card.version,
        "width": width,
        "height": height,
        "predictions": predictions,
        "transform": transform_out,
        "crop": crop_url,
        "timings": {
            "decode_ms": decoded.decode_seconds * 1000.0,
            "queue_ms": outputs.queue_seconds * 1000.0,
            "inference_ms": outputs.inference_seconds * 1000.0,
            "encode_ms": encode_seconds * 1000.0,
            "total_ms": (time.perf_counter() - request_start) * 1000.0,
            "batch_size": outputs.batch_size,
        },
    }
    top = predictions[0]
    return ImageAnswer(result, top["class_id"], top["probability"], transform, encode_seconds)
