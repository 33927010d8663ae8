"""The request path as plain steps: decode, (batched) inference, post-process.

``decode_step`` and ``postprocess_step`` are synchronous functions the classify route runs in the decode
executor; in between, :func:`infer_step` submits the network inputs to the model's batcher and awaits them.
``/v1`` classify and ``/v2`` infer share that one inference step (submit, deadline, cancel, output checks).
None of them knows about HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

from service.bundles import ModelCard
from service.errors import InvalidImage, NonFiniteOutput, RequestTimeout
from service.geometry import crop_transform
from service.imaging import DEFAULT_CROP_QUALITY, decode_image, preprocess, render_and_encode_crop
from service.inference import ImageOutputs, Reservation
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
    crop_format: str,
    crop_size: int,
    request_start: float,
    crop_quality: int = DEFAULT_CROP_QUALITY,
) -> tuple[ImageResult, float, float]:
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
            outside_fraction=transform.outside_fraction,
        )
        if crop_format != "none":
            crop_url = render_and_encode_crop(
                decoded.image, transform.image_from_crop, crop_size, crop_format, crop_quality
            )
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
