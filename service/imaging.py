"""Image handling: content types, safe decoding, mode conversion, the bundle's resize, crop rendering.

Every function here is a plain function over bytes, Pillow images and numpy arrays (no HTTP), so the request
path's steps are testable on their own. Pixel conventions are those of :mod:`service.geometry`.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import struct
from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import InvalidImage, UnsupportedMediaType
from service.geometry import polygon_area

log = logging.getLogger(__name__)

#: Pillow decoders the service lets run (``Image.open(formats=...)``); everything else is refused unread.
PILLOW_FORMATS: Final[tuple[str, ...]] = ("PNG", "JPEG", "WEBP", "PPM", "GIF", "BMP")

#: Content types accepted for a raw image body or a multipart file part. The type only gates the request
#: (415 otherwise); the decoder then identifies the actual format among :data:`PILLOW_FORMATS`.
IMAGE_CONTENT_TYPES: Final[frozenset[str]] = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/jpg",
        "image/pjpeg",
        "image/webp",
        "image/gif",
        "image/bmp",
        "image/x-ms-bmp",
        "image/x-portable-pixmap",
        "image/x-portable-anymap",
        "image/x-portable-graymap",
        "image/x-portable-bitmap",
    }
)

#: Part types accepted in multipart uploads besides image types (clients that do not guess a type).
GENERIC_PART_TYPES: Final[frozenset[str]] = frozenset({"", "application/octet-stream"})

RESAMPLING: Final[dict[str, Image.Resampling]] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}

_SIXTEEN_BIT_MODES: Final[frozenset[str]] = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_ALPHA_MODES: Final[frozenset[str]] = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
WHITE: Final[tuple[int, int, int, int]] = (255, 255, 255, 255)


def media_type(content_type: str | None) -> str:
    """The bare, lower-case media type of a Content-Type header value (parameters dropped; '' if absent)."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def check_image_content_type(content_type: str | None, *, allow_generic: bool) -> None:
    """Raise :class:`UnsupportedMediaType` unless ``content_type`` is an accepted image type.

    Args:
        content_type: the Content-Type header (of the request, or of one multipart part).
        allow_generic: also accept a missing type and ``application/octet-stream`` (multipart parts).
    """
    kind = media_type(content_type)
    if kind in IMAGE_CONTENT_TYPES or (allow_generic and kind in GENERIC_PART_TYPES):
        return
    accepted = ", ".join(sorted(IMAGE_CONTENT_TYPES))
    raise UnsupportedMediaType(
        f"unsupported content type {kind or '(none)'!r}; send multipart/form-data or one of: {accepted}"
    )


def decode_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Decode one uploaded still image to an RGB Pillow image at its original resolution.

    :func:`open_image` then :func:`load_image`: refuse empty input; identify the format from the header only
    (:data:`PILLOW_FORMATS`); refuse a declared ``width * height`` above ``max_pixels`` *before* decoding any
    pixel (decompression bombs); refuse zero-size and multi-frame (animated) images; decode (truncated data
    is an error); apply the EXIF orientation; convert to RGB with :func:`to_rgb`.

    Args:
        data: the encoded file.
        max_pixels: the largest accepted declared pixel count.

    Returns:
        An RGB image of size (W, H) after EXIF orientation.

    Raises:
        InvalidImage: with code ``empty_image``, ``invalid_image``, ``image_too_large``, ``animated_image``
            or ``truncated_image``.
    """
    return load_image(open_image(data, max_pixels=max_pixels))


def open_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Read an upload's header only and check it: the first half of :func:`decode_image`.

    Cheap whatever the image's size (no pixel is decoded), so the request path can run it on the event loop
    and decide from ``image.size`` where to run :func:`load_image`.

    Returns:
        The opened, not yet loaded Pillow image (close it, or pass it to :func:`load_image`, which does).

    Raises:
        InvalidImage: with code ``empty_image``, ``invalid_image``, ``image_too_large`` or
            ``animated_image``; ``truncated_image`` when the frame headers end early.
    """
    if not data:
        raise InvalidImage("the image is empty (0 bytes)", code="empty_image")
    formats = ", ".join(PILLOW_FORMATS)
    try:
        image = Image.open(io.BytesIO(data), formats=list(PILLOW_FORMATS))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage(f"image refused before decoding: {exc}", code="image_too_large") from exc
    except UnidentifiedImageError as exc:
        # Pillow's own text names the in-memory buffer's address: not for users.
        raise InvalidImage(f"cannot identify the image: not a {formats} file") from exc
    except MemoryError:
        raise
    except Exception as exc:  # a parser failure on untrusted bytes: see _decoder_error
        raise InvalidImage(f"cannot identify the image (accepted formats: {formats}): {exc}") from exc
    try:
        width, height = image.size
        if width <= 0 or height <= 0:
            raise InvalidImage(f"the image has zero size ({width}x{height})", code="invalid_image")
        if width * height > max_pixels:
            raise InvalidImage(
                f"image refused before decoding: {width}x{height} = {width * height} pixels exceeds "
                f"the limit of {max_pixels} (SERVICE_MAX_IMAGE_PIXELS)",
                code="image_too_large",
            )
        try:
            frames = int(getattr(image, "n_frames", 1))
        except MemoryError:
            raise
        except Exception as exc:  # e.g. IndexError from Pillow's GIF reader on a cut frame header
            raise _decoder_error("cannot read the image's frames", exc) from exc
        if frames > 1:
            raise InvalidImage(
                f"animated or multi-frame images are not accepted ({image.format}, {frames} frames); "
                "send a single still image",
                code="animated_image",
            )
    except BaseException:
        image.close()
        raise
    return image


def load_image(image: Image.Image) -> Image.Image:
    """Decode an image from :func:`open_image` (closing it), apply its EXIF orientation, convert to RGB.

    Returns:
        An RGB image of size (W, H) after EXIF orientation (a new image; ``image`` is closed).

    Raises:
        InvalidImage: ``truncated_image`` or ``invalid_image`` when the pixel data cannot be decoded.
    """
    with image:
        try:
            image.load()
        except MemoryError:
            raise
        except Exception as exc:
            raise _decoder_error(f"cannot decode the {image.format} image", exc) from exc
        oriented = _exif_transpose(image)
        return to_rgb(oriented)


def _decoder_error(what: str, exc: Exception) -> InvalidImage:
    """The 422 for an exception that a Pillow decoder raised on an upload: truncated_image or invalid_image.

    Pillow's decoders parse untrusted bytes and fail in many ways besides ``OSError``: ``IndexError`` and
    ``struct.error`` on data that ends early, ``SyntaxError``, ``ValueError``, ``KeyError``, ``TypeError``,
    and warnings (``UserWarning("Corrupt EXIF data")``, ``"Invalid APNG"``) that are raised as exceptions
    where warnings are errors (``python -W error``, the test suite). Each one means that the upload is not
    a usable image: a client error (422), never a 500 (tests/fuzz feeds the decoders truncated, bit-flipped
    and forged files). ``MemoryError`` is not caught: it is the server's problem.
    """
    message = str(exc) or type(exc).__name__
    ended_early = isinstance(exc, EOFError | IndexError | struct.error) or "truncated" in message.lower()
    return InvalidImage(f"{what}: {message}", code="truncated_image" if ended_early else "invalid_image")


def _exif_transpose(image: Image.Image) -> Image.Image:
    """Apply the EXIF Orientation tag (a copy); an unreadable EXIF block leaves the image as stored.

    The EXIF block is untrusted metadata parsed by Pillow's TIFF reader, which fails on corrupt blocks in
    many ways: ``struct.error`` on a short header, ``UserWarning("Corrupt EXIF data ...")`` raised as an
    exception where warnings are errors (``python -W error``, the test suite), ``KeyError``, ``TypeError``...
    (found by tests/fuzz). The orientation is optional, so any such failure means "no usable orientation".
    """
    try:
        oriented = ImageOps.exif_transpose(image)
    except Exception as exc:  # any failure of the metadata parser: see the docstring
        log.warning("ignoring unreadable EXIF data: %s: %s", type(exc).__name__, exc)
        return image.copy()
    return oriented if oriented is not None else image


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, the way the service documents it.

    * ``RGB``: unchanged (the same object).
    * ``L``, ``1``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: Pillow's ``convert("RGB")`` (CMYK with Pillow's
      formula; embedded ICC profiles are ignored, as in training).
    * ``P``: through RGBA when the palette has transparency, else straight to RGB.
    * alpha (``RGBA``, ``LA``, ``PA``, or ``L``/``RGB`` with a ``transparency`` key): composited over white.
    * 16-bit (``I;16*``, and ``I`` read as 16-bit): scaled to 8 bits by ``round(v / 257)`` (65535 -> 255),
      where Pillow's plain ``convert`` would clip everything above 255 to white.
    * ``F``: clipped to 0..255 and rounded.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.float64)
        gray = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if mode == "F":
        gray = np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    has_transparency = "transparency" in image.info
    if mode in _ALPHA_MODES or (has_transparency and mode in {"P", "L", "RGB", "1"}):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE)
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def preprocess(
    image: Image.Image, size: tuple[int, int] = (50, 50), method: str = "bilinear"
) -> npt.NDArray[np.float32]:
    """The network input of one image: RGB, resized with the bundle's declared method, CHW float32 0..255.

    Exactly ``to_rgb(image).resize(size, Image.Resampling.BILINEAR)`` for the bundles of schema 1 (whole
    image, aspect ratio not kept); for an RGB image that is the training package's ``img.convert("RGB")``
    followed by the same resize.

    Args:
        image: any Pillow image, already EXIF-oriented.
        size: (width, height) of the network frame, (50, 50).
        method: a key of :data:`RESAMPLING`, from the bundle's ``input.resize.method``.

    Returns:
        (3, H, W) float32 array of 0..255 RGB values, C-contiguous.
    """
    if method not in RESAMPLING:
        raise ValueError(f"unknown resize method {method!r}; expected one of {sorted(RESAMPLING)}")
    resized = to_rgb(image).resize(size, RESAMPLING[method])
    array = np.asarray(resized, dtype=np.float32).transpose(2, 0, 1)
    return np.ascontiguousarray(array)


def render_crop(
    image: Image.Image,
    image_from_crop: npt.ArrayLike,
    crop_size: int,
    *,
    samples_per_pixel: float | None = None,
) -> Image.Image:
    """Render the aligned crop from the original RGB image with bilinear sampling.

    Pillow's ``Image.transform(PERSPECTIVE)`` evaluates, for the output pixel centre (x, y) (edges at
    integers), the input point ``((a x + b y + c) / (g x + h y + 1), (d x + e y + f) / (g x + h y + 1))`` and
    samples it with input pixel centres at +0.5: the conventions of :mod:`service.geometry`, so the
    coefficients are the first eight entries of ``image_from_crop`` (normalised to ``[2, 2] == 1``).
    Points outside the image are black, like the network's zero padding.

    Pillow's transform costs about 18 ns per output pixel whatever the source (0.3 ms at 128 x 128, 86% of a
    JPEG crop's cost). Most crops enlarge a small photo, so with ``samples_per_pixel`` the crop is rendered
    at only that many samples per source pixel (on average: per side of the square of the crop's area in
    the photo; at least 16 pixels a side, and only below 3/4 of S) and enlarged to S x S with Pillow's
    bilinear resize:
    the same bilinear surface, sampled more coarsely. The lossy crop formats use 2
    (``LOSSY_SAMPLES_PER_PIXEL``); docs/benchmarks.md has the time it saves and the difference it makes.

    Args:
        image: the uploaded image, RGB, (W, H).
        image_from_crop: (3, 3) crop pixel coordinates -> image pixel coordinates.
        crop_size: S, pixels a side.
        samples_per_pixel: None for the exact rendering at S x S; else the samples per source pixel to keep.

    Returns:
        An RGB image of size (S, S).
    """
    m = np.asarray(image_from_crop, dtype=np.float64)
    m = m / m[2, 2]
    side = crop_size
    if samples_per_pixel is not None:
        side = max(16, math.ceil(samples_per_pixel * _mean_side(m, crop_size)))
        if side > COARSE_RENDER_MAX * crop_size:  # the enlargement (~0.08 ms at 128) would cost more
            side = crop_size
        if side < crop_size:
            m = m @ np.diag([crop_size / side, crop_size / side, 1.0])  # coarse pixel -> crop pixel
    coefficients = tuple(float(v) for v in (m / m[2, 2]).reshape(-1)[:8])
    rendered = image.transform(
        (side, side),
        Image.Transform.PERSPECTIVE,
        coefficients,
        resample=Image.Resampling.BILINEAR,
        fillcolor=(0, 0, 0),
    )
    if side == crop_size:
        return rendered
    return rendered.resize((crop_size, crop_size), Image.Resampling.BILINEAR)


def _mean_side(image_from_crop: npt.NDArray[np.float64], crop_size: int) -> float:
    """The crop's mean side length in source pixels: the square root of its quadrilateral's area."""
    s = float(crop_size)
    corners = np.array([[0.0, 0.0, 1.0], [s, 0.0, 1.0], [s, s, 1.0], [0.0, s, 1.0]]) @ image_from_crop.T
    side = math.sqrt(abs(polygon_area(corners[:, :2] / corners[:, 2:3])))
    return side if math.isfinite(side) else s


#: Formats of the aligned crop (the classify routes' ``crop`` option besides ``none``) and their media types.
CROP_MEDIA_TYPES: Final[dict[str, str]] = {"jpeg": "image/jpeg", "webp": "image/webp", "png": "image/png"}
#: The default crop format, chosen by measurement (benchmarks/crop_encode.py, docs/benchmarks.md): the
#: cheapest to encode, by far, at the default crop size.
DEFAULT_CROP_FORMAT: Final = "jpeg"
#: JPEG and WebP quality (1-100) unless a request asks for another (``crop_quality``); PNG ignores it.
DEFAULT_CROP_QUALITY: Final = 90
#: Samples per source pixel at which lossy crops are rendered before being enlarged (:func:`render_crop`).
LOSSY_SAMPLES_PER_PIXEL: Final = 2.0
#: A coarse rendering is used only when it has at most this fraction of the crop's side (else the bilinear
#: enlargement costs more than the pixels it saves).
COARSE_RENDER_MAX: Final = 0.75
#: zlib level of PNG crops: level 1 costs about 30% less time than Pillow's usual 6 or the former 3, for a
#: file a few percent larger.
PNG_COMPRESS_LEVEL: Final = 1


def encode_crop(image: Image.Image, fmt: str, quality: int = DEFAULT_CROP_QUALITY) -> bytes:
    """Encode a rendered crop in one of :data:`CROP_MEDIA_TYPES`.

    * ``png``: lossless, zlib level :data:`PNG_COMPRESS_LEVEL`; ``quality`` is ignored.
    * ``jpeg``: baseline JPEG at ``quality``, Pillow's default 4:2:0 chroma subsampling.
    * ``webp``: lossy WebP at ``quality``, libwebp's fastest method (0).

    Args:
        image: the RGB crop.
        fmt: ``png``, ``jpeg`` or ``webp``.
        quality: 1-100, JPEG and WebP only.

    Raises:
        ValueError: an unknown format or a quality outside 1-100.
    """
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    elif fmt == "jpeg":
        image.save(buffer, format="JPEG", quality=quality)
    elif fmt == "webp":
        image.save(buffer, format="WEBP", quality=quality, method=0)
    else:
        raise ValueError(f"unknown crop format {fmt!r}; expected one of {sorted(CROP_MEDIA_TYPES)}")
    return buffer.getvalue()


def crop_data_url(image: Image.Image, fmt: str, quality: int = DEFAULT_CROP_QUALITY) -> str:
    """A ``data:image/<fmt>;base64,...`` URL of the crop encoded by :func:`encode_crop`."""
    data = encode_crop(image, fmt, quality)
    return f"data:{CROP_MEDIA_TYPES[fmt]};base64," + base64.b64encode(data).decode("ascii")


def render_and_encode_crop(
    image: Image.Image, image_from_crop: npt.ArrayLike, crop_size: int, fmt: str, quality: int
) -> str:
    """The crop as the service returns it: PNG rendered exactly (lossless), JPEG and WebP rendered at
    :data:`LOSSY_SAMPLES_PER_PIXEL` (:func:`render_crop`), then encoded as a data URL."""
    samples = None if fmt == "png" else LOSSY_SAMPLES_PER_PIXEL
    crop = render_crop(image, image_from_crop, crop_size, samples_per_pixel=samples)
    return crop_data_url(crop, fmt, quality)


def png_data_url(image: Image.Image) -> str:
    """Encode an image as a ``data:image/png;base64,...`` URL (:func:`crop_data_url` with ``png``)."""
    return crop_data_url(image, "png")
