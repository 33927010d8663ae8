"""A deterministic corpus of hostile and odd image uploads, built from real GTSRB signs.

Every sample is made here, in memory, from a few original-resolution test images (``test_originals/``) and
seeded random numbers, so a run is reproducible and nothing is stored. Each :class:`Sample` carries what the
service must answer for it (docs/service.md, "Image handling"): ``status`` 200, a specific 4xx status and
error ``code``, or ``None`` when either a 200 or a 4xx is acceptable (a bit flip may or may not break a file).
Nothing in the corpus may ever give a 5xx.

Families (the ``family`` field): ``encoding`` (the signs in every format, TIFF included, which is refused),
``truncated``, ``bitflip``, ``extreme_size``, ``bomb`` (huge declared dimensions in a tiny file), ``exif``
(orientations 1-8, invalid orientations, corrupt EXIF blocks), ``mode`` (palette, alpha, 1/2/4/16-bit, CMYK,
PGM/PBM...), ``animated``, ``empty``, ``random`` (random bytes, with and without a format's magic number)
and ``content_type`` (mismatched or unsupported Content-Type headers).
"""

from __future__ import annotations

import io
import os
import random
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from service.imaging import IMAGE_CONTENT_TYPES
from tests.service.helpers import encode, gtsrb_originals, open_rgb, png_chunk, raw_png

#: bit-flipped variants per encoding of the mutated sign; ``FUZZ_MUTATIONS`` raises it for a long local run.
DEFAULT_MUTATIONS = 6
#: seed of every random choice of the corpus (flip positions, random bodies); ``FUZZ_SEED`` changes it.
DEFAULT_SEED = 20240611

PNG_TYPE = "image/png"
#: Content-Type sent with each encoding (the service identifies the real format from the bytes anyway).
FORMAT_TYPES: dict[str, str] = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "PPM": "image/x-portable-pixmap",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}
ACCEPTED_TYPES = tuple(sorted(IMAGE_CONTENT_TYPES))  # every type the service accepts
ORIENTATION = 0x0112

#: error codes a bad image may get (docs/service.md): any of them is fine for a mutated file.
IMAGE_ERROR_CODES = frozenset(
    {"empty_image", "invalid_image", "truncated_image", "animated_image", "image_too_large"}
)


@dataclass(frozen=True)
class Sample:
    """One upload and the answer the service owes it.

    Attributes:
        name: unique, readable id (used as the multipart file name too).
        family: the corpus family (module docstring).
        data: the request body / file content.
        content_type: the Content-Type of the raw body and of the multipart part.
        status: the required HTTP status, or None for "200 or a 4xx image error".
        codes: for an error status, the acceptable error codes (empty: any code).
        size: for a 200, the required (width, height) after EXIF orientation (None: not checked).
        part_status: the status of the multipart upload when it differs from the raw body's (content types
            that are refused as a raw body but allowed for a multipart part, and vice versa).
    """

    name: str
    family: str
    data: bytes
    content_type: str = PNG_TYPE
    status: int | None = None
    codes: frozenset[str] = field(default_factory=frozenset)
    size: tuple[int, int] | None = None
    part_status: int | None = None


def env_int(name: str, default: int) -> int:
    """An integer from the environment (for longer local runs), else ``default``."""
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def ok(name: str, family: str, data: bytes, content_type: str, size: tuple[int, int] | None) -> Sample:
    return Sample(name, family, data, content_type, status=200, size=size)


def refused(name: str, family: str, data: bytes, content_type: str, *codes: str, status: int = 422) -> Sample:
    return Sample(name, family, data, content_type, status=status, codes=frozenset(codes))


def anything(name: str, family: str, data: bytes, content_type: str) -> Sample:
    return Sample(name, family, data, content_type, status=None, codes=IMAGE_ERROR_CODES)


# ---- encoders ----


def encodings(image: Image.Image) -> dict[str, bytes]:
    """The sign in every format the corpus uses (WebP lossy and lossless, GIF quantised, TIFF refused)."""
    return {
        "PNG": encode(image, "PNG"),
        "JPEG": encode(image, "JPEG", quality=90),
        "WEBP": encode(image, "WEBP", quality=80),
        "WEBP-lossless": encode(image, "WEBP", lossless=True),
        "GIF": encode(image, "GIF"),
        "PPM": encode(image, "PPM"),
        "BMP": encode(image, "BMP"),
        "TIFF": encode(image, "TIFF"),
    }


def content_type_of(fmt: str) -> str:
    return FORMAT_TYPES[fmt.split("-")[0]]


def netpbm(magic: bytes, width: int, height: int, maxval: int | None, pixels: bytes) -> bytes:
    header = magic + b"\n%d %d\n" % (width, height)
    if maxval is not None:
        header += b"%d\n" % maxval
    return header + pixels


def png_with_chunks(png: bytes, *chunks: bytes) -> bytes:
    """Insert raw chunks right after IHDR (signature 8 bytes + IHDR chunk 25 bytes)."""
    return png[:33] + b"".join(chunks) + png[33:]


def gif_header(width: int, height: int, frame: tuple[int, int] | None = None) -> bytes:
    """A GIF with a ``width x height`` screen and one frame (default: the same size) of almost no data."""
    fw, fh = frame or (width, height)
    return (
        b"GIF89a"
        + struct.pack("<HHBBB", width, height, 0x80, 0, 0)  # global colour table of 2 entries
        + b"\x00\x00\x00\xff\xff\xff"
        + b","
        + struct.pack("<HHHHB", 0, 0, fw, fh, 0)
        + b"\x02\x02\x44\x01\x00"  # LZW minimum code size 2, one 2-byte sub-block, end of data
        + b";"
    )


def bmp_header(width: int, height: int, bits: int = 24, payload: bytes = b"\x00" * 16) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bits, 0, 0, 2835, 2835, 0, 0)
    offset = 14 + len(info)
    return b"BM" + struct.pack("<IHHI", offset + len(payload), 0, 0, offset) + info + payload


def patch_jpeg_size(jpeg: bytes, width: int, height: int) -> bytes:
    """Rewrite the SOF0/SOF2 frame header's dimensions of a real JPEG (the pixel data stays small)."""
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = jpeg.find(marker)
        if at >= 0:
            return jpeg[: at + 5] + struct.pack(">HH", height, width) + jpeg[at + 9 :]
    raise ValueError("no SOF marker")


def webp_lossless_header(width: int, height: int) -> bytes:
    """A VP8L (lossless WebP) file whose header declares ``width x height`` and holds no image data."""
    bits = (width - 1) | ((height - 1) << 14)  # 14 bits each, then alpha hint and version (0)
    payload = b"\x2f" + struct.pack("<I", bits) + b"\x00" * 8
    chunk = b"VP8L" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def tiff_ifd(entries: list[tuple[int, int, int, bytes]], *, little: bool = True) -> bytes:
    """A minimal TIFF/EXIF block with one IFD of raw ``(tag, type, count, 4-byte value)`` entries."""
    order = "<" if little else ">"
    head = (b"II*\x00" if little else b"MM\x00*") + struct.pack(order + "I", 8)
    body = struct.pack(order + "H", len(entries))
    for tag, kind, count, value in entries:
        body += struct.pack(order + "HHI", tag, kind, count) + value.ljust(4, b"\x00")[:4]
    return head + body + struct.pack(order + "I", 0)


def exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = value
    return exif.tobytes()


def oriented_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """EXIF orientations 5-8 swap width and height; 1-4 and invalid values keep them."""
    return (size[1], size[0]) if orientation in (5, 6, 7, 8) else size


def animated(frames: list[Image.Image], fmt: str) -> bytes:
    buffer = io.BytesIO()
    frames[0].save(buffer, format=fmt, save_all=True, append_images=frames[1:], duration=60, loop=0)
    return buffer.getvalue()


# ---- the families ----


def encoding_samples(signs: list[Image.Image]) -> Iterator[Sample]:
    for i, sign in enumerate(signs):
        for fmt, data in encodings(sign).items():
            if fmt == "TIFF":
                # Not an accepted decoder: refused by its content type, and not decoded when mislabelled.
                yield refused(
                    f"sign{i}.tiff", "encoding", data, "image/tiff", "unsupported_media_type", status=415
                )
                yield refused(f"sign{i}.tiff-as-png", "encoding", data, PNG_TYPE, "invalid_image")
            else:
                yield ok(f"sign{i}.{fmt.lower()}", "encoding", data, content_type_of(fmt), sign.size)


def truncated_samples(sign: Image.Image) -> Iterator[Sample]:
    for fmt, data in encodings(sign).items():
        n = len(data)
        cuts = sorted({1, 2, 4, 8, 12, 16, 24, 32, 64, 128, n // 4, n // 2, 3 * n // 4, n - 16, n - 1})
        for cut in cuts:
            if 0 < cut < n:
                kind = PNG_TYPE if fmt == "TIFF" else content_type_of(fmt)
                yield anything(f"{fmt.lower()}-cut{cut}of{n}", "truncated", data[:cut], kind)
    # A still GIF followed by the start of a second frame, cut after its descriptor: Pillow's frame count
    # raised IndexError (a 500 before tests/fuzz found it).
    gif = encode(sign, "GIF")
    cut_frame = gif.removesuffix(b";") + b"," + struct.pack("<HHHHB", 0, 0, 4, 4, 0)
    yield refused("gif-second-frame-cut", "truncated", cut_frame, "image/gif", "truncated_image")


def bitflip_samples(sign: Image.Image, rng: random.Random, variants: int) -> Iterator[Sample]:
    for fmt, data in encodings(sign).items():
        kind = PNG_TYPE if fmt == "TIFF" else content_type_of(fmt)
        for v in range(variants):
            flips = 1 << (v % 7)  # 1, 2, 4, ... 64 bits
            mutated = bytearray(data)
            for _ in range(flips):
                # Half the flips hit the first 64 bytes (headers), half anywhere.
                limit = min(64, len(data)) if rng.random() < 0.5 else len(data)
                pos = rng.randrange(limit)
                mutated[pos] ^= 1 << rng.randrange(8)
            yield anything(f"{fmt.lower()}-flip{v}x{flips}", "bitflip", bytes(mutated), kind)


def extreme_size_samples(sign: Image.Image) -> Iterator[Sample]:
    sizes = [(1, 1), (2, 2), (1, 50), (50, 1), (1, 3000), (3000, 1), (8000, 3), (3, 8000), (2000, 40)]
    for w, h in sizes:
        resized = sign.resize((w, h), Image.Resampling.BILINEAR)
        yield ok(f"png-{w}x{h}", "extreme_size", encode(resized, "PNG"), PNG_TYPE, (w, h))
    for w, h in [(1, 1), (4000, 2), (2, 4000)]:
        resized = sign.resize((w, h), Image.Resampling.BILINEAR)
        yield ok(f"jpeg-{w}x{h}", "extreme_size", encode(resized, "JPEG"), "image/jpeg", (w, h))
        yield ok(
            f"webp-{w}x{h}", "extreme_size", encode(resized, "WEBP", lossless=True), "image/webp", (w, h)
        )
        yield ok(f"gif-{w}x{h}", "extreme_size", encode(resized, "GIF"), "image/gif", (w, h))
        yield ok(f"bmp-{w}x{h}", "extreme_size", encode(resized, "BMP"), "image/bmp", (w, h))
        yield ok(f"ppm-{w}x{h}", "extreme_size", encode(resized, "PPM"), "image/x-portable-pixmap", (w, h))
    # A large but legal image (16 Mpx, under SERVICE_MAX_IMAGE_PIXELS): decoded, resized, classified.
    big = sign.resize((64, 64)).resize((4000, 4000), Image.Resampling.NEAREST)
    yield ok("png-4000x4000", "extreme_size", encode(big, "PNG", compress_level=1), PNG_TYPE, (4000, 4000))


def bomb_samples(sign: Image.Image) -> Iterator[Sample]:
    """Huge declared dimensions in tiny files: refused from the header, before any pixel is decoded."""
    too_large = ("image_too_large",)
    yield refused(
        "png-100000x100000",
        "bomb",
        raw_png(100_000, 100_000, idat=zlib.compress(b"\x00")),
        PNG_TYPE,
        *too_large,
    )
    yield refused(
        "png-7000x7000", "bomb", raw_png(7000, 7000, idat=zlib.compress(b"\x00" * 64)), PNG_TYPE, *too_large
    )
    yield refused(
        "png-2147483647x1", "bomb", raw_png(2**31 - 1, 1, idat=b""), PNG_TYPE, *too_large, "invalid_image"
    )
    # A real zlib bomb: 64 Mpx of zero rows compress to ~64 KB.
    rows = zlib.compressobj(9)
    line = b"\x00" * 8001  # filter byte + 8000 grey pixels
    idat = b"".join(rows.compress(line) for _ in range(8000)) + rows.flush()
    yield refused(
        "png-zlib-bomb-8000x8000", "bomb", raw_png(8000, 8000, color_type=0, idat=idat), PNG_TYPE, *too_large
    )
    yield refused("gif-65535x65535", "bomb", gif_header(65535, 65535), "image/gif", *too_large)
    yield refused("gif-7000x7000", "bomb", gif_header(7000, 7000), "image/gif", *too_large)
    # A small screen with one huge frame: Pillow's GIF size is the screen; the frame lies outside it.
    yield anything("gif-frame-outside-screen", "bomb", gif_header(8, 8, frame=(65535, 65535)), "image/gif")
    yield refused("bmp-50000x50000", "bomb", bmp_header(50_000, 50_000), "image/bmp", *too_large)
    yield refused("bmp-topdown-50000x-50000", "bomb", bmp_header(50_000, -50_000), "image/bmp", *too_large)
    jpeg = encode(sign, "JPEG")
    yield refused("jpeg-65000x65000", "bomb", patch_jpeg_size(jpeg, 65000, 65000), "image/jpeg", *too_large)
    yield refused("jpeg-9000x9000", "bomb", patch_jpeg_size(jpeg, 9000, 9000), "image/jpeg", *too_large)
    # libwebp checks the (empty) bitstream when the file is opened: refused, as too large or as invalid.
    webp = webp_lossless_header(16384, 16384)
    yield refused("webp-16384x16384", "bomb", webp, "image/webp", "image_too_large", "invalid_image")
    ppm = netpbm(b"P6", 60000, 60000, 255, b"\x00" * 64)
    yield refused("ppm-60000x60000", "bomb", ppm, "image/x-portable-pixmap", *too_large)
    pgm = netpbm(b"P5", 10000, 10000, 65535, b"\x00" * 64)
    yield refused("pgm16-10000x10000", "bomb", pgm, "image/x-portable-graymap", *too_large)


def exif_samples(sign: Image.Image) -> Iterator[Sample]:
    size = sign.size
    for value in range(1, 9):
        exif = exif_orientation(value)
        expected = oriented_size(size, value)
        yield ok(f"jpeg-orientation{value}", "exif", encode(sign, "JPEG", exif=exif), "image/jpeg", expected)
        yield ok(f"png-orientation{value}", "exif", encode(sign, "PNG", exif=exif), PNG_TYPE, expected)
        yield ok(f"webp-orientation{value}", "exif", encode(sign, "WEBP", exif=exif), "image/webp", expected)
    for value in (0, 9, 255, 65535):  # invalid orientations: ignored, the image stays as stored
        data = encode(sign, "JPEG", exif=exif_orientation(value))
        yield ok(f"jpeg-orientation{value}", "exif", data, "image/jpeg", size)
    ascii_orientation = tiff_ifd([(ORIENTATION, 2, 4, b"six\x00")])
    corrupt = {
        "garbage": b"Exif\x00\x00" + random.Random(7).randbytes(48),
        "header-only": b"Exif\x00\x00II*\x00",
        "no-exif-prefix": b"not an exif block at all",
        "ifd-offset-outside": b"Exif\x00\x00II*\x00\xff\xff\xff\x7f",
        "ifd-count-65535": b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff",
        "orientation-ascii": b"Exif\x00\x00" + ascii_orientation,
        "orientation-count0": b"Exif\x00\x00" + tiff_ifd([(ORIENTATION, 3, 0, b"")]),
        "orientation-long": b"Exif\x00\x00" + tiff_ifd([(ORIENTATION, 4, 1, struct.pack("<I", 6))]),
        "orientation-rational-outside": b"Exif\x00\x00"
        + tiff_ifd([(ORIENTATION, 5, 1, b"\xff\xff\xff\x0f")]),
        "orientation-two-values": b"Exif\x00\x00" + tiff_ifd([(ORIENTATION, 3, 2, b"\x06\x00\x03\x00")]),
        "bad-type": b"Exif\x00\x00" + tiff_ifd([(ORIENTATION, 99, 1, b"\x06\x00")]),
        "exif-ifd-loop": b"Exif\x00\x00" + tiff_ifd([(0x8769, 4, 1, struct.pack("<I", 8))]),
        "big-endian-6": b"Exif\x00\x00" + tiff_ifd([(ORIENTATION, 3, 1, b"\x00\x06")], little=False),
    }
    for label, block in corrupt.items():
        # Unreadable EXIF is ignored: decoded as stored, or (a readable orientation) turned upright.
        data = encode(sign, "JPEG", exif=block)
        yield Sample(f"jpeg-exif-{label}", "exif", data, "image/jpeg", status=200)
        png = png_with_chunks(encode(sign, "PNG"), png_chunk(b"eXIf", block.removeprefix(b"Exif\x00\x00")))
        yield Sample(f"png-exif-{label}", "exif", png, PNG_TYPE, status=200)
    raw_profile = png_chunk(b"tEXt", b"Raw profile type exif\x00\nexif\n  12\nzz-not-hex\n")
    yield Sample(
        "png-raw-profile-exif",
        "exif",
        png_with_chunks(encode(sign, "PNG"), raw_profile),
        PNG_TYPE,
        status=200,
    )


def mode_samples(sign: Image.Image) -> Iterator[Sample]:
    size = sign.size
    w, h = size
    palette = sign.quantize(64)
    rgba = sign.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(size))
    gray = np.asarray(sign.convert("L"), dtype=np.uint16)
    samples: dict[str, tuple[bytes, str]] = {
        "png-P": (encode(palette), PNG_TYPE),
        "png-P-transparency": (encode(palette, "PNG", transparency=0), PNG_TYPE),
        "png-RGBA": (encode(rgba), PNG_TYPE),
        "png-LA": (encode(rgba.convert("LA")), PNG_TYPE),
        "png-L": (encode(sign.convert("L")), PNG_TYPE),
        "png-L-transparency": (encode(sign.convert("L"), "PNG", transparency=128), PNG_TYPE),
        "png-RGB-transparency": (encode(sign, "PNG", transparency=(255, 255, 255)), PNG_TYPE),
        "png-1": (encode(sign.convert("1")), PNG_TYPE),
        "gif-transparency": (encode(palette, "GIF", transparency=0), "image/gif"),
        "jpeg-L": (encode(sign.convert("L"), "JPEG"), "image/jpeg"),
        "jpeg-CMYK": (encode(sign.convert("CMYK"), "JPEG"), "image/jpeg"),
        "jpeg-progressive": (encode(sign, "JPEG", progressive=True), "image/jpeg"),
        "jpeg-444": (encode(sign, "JPEG", subsampling=0, quality=95), "image/jpeg"),
        "webp-RGBA": (encode(rgba, "WEBP"), "image/webp"),
        "webp-RGBA-lossless": (encode(rgba, "WEBP", lossless=True), "image/webp"),
        "bmp-RGBA": (encode(rgba, "BMP"), "image/bmp"),
        "bmp-1": (encode(sign.convert("1"), "BMP"), "image/bmp"),
        "bmp-P": (encode(palette, "BMP"), "image/bmp"),
        "bmp-L": (encode(sign.convert("L"), "BMP"), "image/bmp"),
        "pgm": (encode(sign.convert("L"), "PPM"), "image/x-portable-graymap"),
        "pbm": (encode(sign.convert("1"), "PPM"), "image/x-portable-bitmap"),
        "pgm-16bit": (
            netpbm(b"P5", w, h, 65535, (gray * 257).astype(">u2").tobytes()),
            "image/x-portable-graymap",
        ),
        "ppm-16bit": (
            netpbm(b"P6", w, h, 65535, (np.asarray(sign, dtype=np.uint16) * 257).astype(">u2").tobytes()),
            "image/x-portable-pixmap",
        ),
        "ppm-maxval-1000": (
            netpbm(b"P6", w, h, 1000, (np.asarray(sign, dtype=np.uint16) * 3).astype(">u2").tobytes()),
            "image/x-portable-pixmap",
        ),
        "ppm-ascii-P3": (
            netpbm(b"P3", w, h, 255, " ".join(str(v) for v in np.asarray(sign).reshape(-1)).encode()),
            "image/x-portable-pixmap",
        ),
        "pgm-ascii-P2": (
            netpbm(b"P2", w, h, 255, " ".join(str(v) for v in gray.reshape(-1)).encode()),
            "image/x-portable-graymap",
        ),
        "pbm-ascii-P1": (
            netpbm(b"P1", w, h, None, " ".join("1" if v < 128 else "0" for v in gray.reshape(-1)).encode()),
            "image/x-portable-bitmap",
        ),
    }
    for name, (data, kind) in samples.items():
        yield ok(name, "mode", data, kind, size)
    # PNGs written by hand: 16-bit grey/RGB/grey+alpha/RGBA, and 1/2/4-bit grey and palette.
    rng = np.random.default_rng(3)
    for color_type, channels, label in ((0, 1, "I;16"), (2, 3, "RGB16"), (4, 2, "LA16"), (6, 4, "RGBA16")):
        pixels = rng.integers(0, 65536, (h, w, channels)).astype(">u2")
        raw = b"".join(b"\x00" + row.tobytes() for row in pixels)
        data = raw_png(w, h, bit_depth=16, color_type=color_type, idat=zlib.compress(raw))
        yield ok(f"png-{label}", "mode", data, PNG_TYPE, size)
    for depth in (1, 2, 4):
        row_bytes = (w * depth + 7) // 8
        raw = b"".join(b"\x00" + rng.integers(0, 256, row_bytes, dtype=np.uint8).tobytes() for _ in range(h))
        yield ok(
            f"png-gray{depth}",
            "mode",
            raw_png(w, h, bit_depth=depth, color_type=0, idat=zlib.compress(raw)),
            PNG_TYPE,
            size,
        )
        plte = png_chunk(b"PLTE", rng.integers(0, 256, 3 * (1 << depth), dtype=np.uint8).tobytes())
        trns = png_chunk(b"tRNS", b"\x00\x80")
        indexed = png_with_chunks(
            raw_png(w, h, bit_depth=depth, color_type=3, idat=zlib.compress(raw)), plte, trns
        )
        yield ok(f"png-palette{depth}-trns", "mode", indexed, PNG_TYPE, size)
    # A palette PNG without its PLTE chunk, and a PAM (P7) file: refused or decoded, never a 500.
    no_plte = raw_png(w, h, bit_depth=8, color_type=3, idat=zlib.compress(b"\x00" * ((w + 1) * h)))
    yield anything("png-palette-without-PLTE", "mode", no_plte, PNG_TYPE)
    pam = b"P7\nWIDTH %d\nHEIGHT %d\nDEPTH 4\nMAXVAL 255\nTUPLTYPE RGB_ALPHA\nENDHDR\n" % (w, h)
    yield anything("pam-rgba", "mode", pam + np.asarray(rgba).tobytes(), "image/x-portable-anymap")


def animated_samples(sign: Image.Image) -> Iterator[Sample]:
    frames = [sign.rotate(angle) for angle in (0, 10, 20)]
    yield refused("gif-animated", "animated", animated(frames, "GIF"), "image/gif", "animated_image")
    yield refused("webp-animated", "animated", animated(frames, "WEBP"), "image/webp", "animated_image")
    yield refused("apng-animated", "animated", animated(frames, "PNG"), PNG_TYPE, "animated_image")
    yield refused("webp-animated-as-png", "animated", animated(frames, "WEBP"), PNG_TYPE, "animated_image")
    # A GIF of two identical frames: Pillow may merge them into one (then it is a still image).
    yield anything("gif-two-identical-frames", "animated", animated([sign, sign.copy()], "GIF"), "image/gif")


def empty_samples() -> Iterator[Sample]:
    for kind in ACCEPTED_TYPES:
        yield refused(f"empty-{kind}", "empty", b"", kind, "empty_image")


def random_samples(rng: random.Random) -> Iterator[Sample]:
    kinds = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/x-portable-pixmap")
    for length in (1, 7, 64, 1000, 20000):
        for kind in kinds:
            yield refused(f"random{length}-{kind}", "random", rng.randbytes(length), kind, *IMAGE_ERROR_CODES)
    magics = {
        "png": b"\x89PNG\r\n\x1a\n",
        "png-ihdr": b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR",
        "gif": b"GIF89a",
        "jpeg": b"\xff\xd8\xff\xe0",
        "webp": b"RIFF\x00\x01\x00\x00WEBPVP8 ",
        "webp-vp8l": b"RIFF\x00\x01\x00\x00WEBPVP8L",
        "webp-vp8x": b"RIFF\x00\x01\x00\x00WEBPVP8X",
        "bmp": b"BM",
        "ppm": b"P6\n",
        "ppm-header": b"P6\n40 40\n255\n",
    }
    for label, magic in magics.items():
        for length in (16, 4096):
            data = magic + rng.randbytes(length)
            yield anything(f"magic-{label}+random{length}", "random", data, PNG_TYPE)


def content_type_samples(png: bytes, jpeg: bytes, size: tuple[int, int]) -> Iterator[Sample]:
    # Mislabelled but accepted types: the decoder identifies the real format from the bytes.
    for kind in (
        "image/jpeg",
        "image/gif",
        "image/bmp",
        "image/x-portable-pixmap",
        "image/webp",
        "image/pjpeg",
    ):
        yield ok(f"png-as-{kind}", "content_type", png, kind, size)
    yield ok("jpeg-as-image/png", "content_type", jpeg, PNG_TYPE, size)
    yield ok("png-type-with-params", "content_type", png, "image/png; charset=binary; q=1", size)
    yield ok("png-type-upper-case", "content_type", png, "IMAGE/PNG", size)
    # Types that are not images: 415 both as a raw body and as a multipart part.
    for kind in (
        "text/plain",
        "application/json",
        "image/tiff",
        "image/svg+xml",
        "image/avif",
        "image/heic",
        "x/y",
    ):
        yield refused(f"png-as-{kind}", "content_type", png, kind, "unsupported_media_type", status=415)
    # application/octet-stream and no type: refused as a raw body, accepted for a multipart part.
    for kind in ("application/octet-stream", ""):
        yield Sample(
            f"png-as-{kind or 'untyped'}",
            "content_type",
            png,
            kind,
            status=415,
            codes=frozenset({"unsupported_media_type"}),
            size=size,
            part_status=200,
        )


def build_corpus(gtsrb_dir: Path) -> list[Sample]:
    """The whole corpus, in a fixed order (same bytes on every run for the same seed and mutation count)."""
    signs = [open_rgb(path) for path in gtsrb_originals(gtsrb_dir, 3, stride=311)]
    rng = random.Random(env_int("FUZZ_SEED", DEFAULT_SEED))
    mutations = env_int("FUZZ_MUTATIONS", DEFAULT_MUTATIONS)
    sign = signs[0]
    corpus = [
        *encoding_samples(signs),
        *truncated_samples(sign),
        *bitflip_samples(signs[1], rng, mutations),
        *extreme_size_samples(sign),
        *bomb_samples(sign),
        *exif_samples(signs[2]),
        *mode_samples(sign),
        *animated_samples(sign),
        *empty_samples(),
        *random_samples(rng),
        *content_type_samples(encode(sign), encode(sign, "JPEG"), sign.size),
    ]
    names = [s.name for s in corpus]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"duplicate sample names: {sorted(duplicates)}")
    return corpus
