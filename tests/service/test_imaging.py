"""Decoding, mode conversion, the bundle resize and crop rendering, without HTTP."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from service.errors import InvalidImage, UnsupportedMediaType
from service.geometry import canonical_from_crop, crop_transform, image_from_frame
from service.imaging import (
    CROP_MEDIA_TYPES,
    check_image_content_type,
    crop_data_url,
    decode_image,
    encode_crop,
    preprocess,
    render_crop,
    to_rgb,
)
from tests.service.helpers import encode, open_rgb, photo_like, raw_png

MAX = 10_000_000


def decode(data: bytes, max_pixels: int = MAX) -> Image.Image:
    return decode_image(data, max_pixels=max_pixels)


def test_rgb_png_round_trips_exactly() -> None:
    image = photo_like(40, 30)
    out = decode(encode(image))
    assert out.mode == "RGB" and out.size == (40, 30)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(image))


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "PPM", "BMP", "GIF"])
def test_other_formats_decode_to_rgb(fmt: str) -> None:
    out = decode(encode(photo_like(33, 21), fmt))
    assert out.mode == "RGB" and out.size == (33, 21)


def test_grayscale_is_replicated_to_three_channels() -> None:
    gray = photo_like().convert("L")
    out = np.asarray(decode(encode(gray)))
    np.testing.assert_array_equal(out[..., 0], np.asarray(gray))
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_palette_without_transparency_keeps_colours() -> None:
    image = photo_like().quantize(16)
    out = decode(encode(image))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(image.convert("RGB")))


def test_palette_transparency_is_composited_on_white() -> None:
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (0, 0, 4, 8))  # left half red, right half index 0 = transparent black
    data = encode(image, "PNG", transparency=0)
    out = np.asarray(decode(data))
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[0, 7]) == (255, 255, 255)


def test_rgba_is_composited_on_white() -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 200  # red where opaque
    rgba[..., 3] = np.array([0, 128, 255, 255], dtype=np.uint8)[None, :]
    out = np.asarray(decode(encode(Image.fromarray(rgba, "RGBA"))))
    assert tuple(out[0, 0]) == (255, 255, 255)  # fully transparent -> white, not black
    assert tuple(out[0, 3]) == (200, 0, 0)  # opaque -> unchanged
    assert abs(int(out[0, 1, 1]) - 127) <= 1  # half transparent over white


def test_cmyk_jpeg_converts() -> None:
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    out = np.asarray(decode(encode(cmyk, "JPEG", quality=95)))
    r, g, b = out[8, 8].astype(int)
    assert r > 230 and g < 30 and b < 30


def test_16_bit_grayscale_is_scaled_not_clipped() -> None:
    ramp = np.linspace(0, 65535, 64, dtype=np.float64).round().astype(">u2").reshape(1, 64).repeat(2, axis=0)
    raw = b"".join(b"\x00" + row.tobytes() for row in ramp)
    data = raw_png(64, 2, bit_depth=16, color_type=0, idat=zlib.compress(raw))
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = np.asarray(decode(data))[0, :, 0].astype(int)
    expected = np.rint(ramp[0].astype(np.float64) / 257).astype(int)
    np.testing.assert_array_equal(out, expected)
    assert out[0] == 0 and out[-1] == 255 and 120 <= out[32] <= 135  # a ramp, not white from 255 on


def test_16_bit_rgb_png_decodes_to_8_bit_rgb() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 65536, (5, 7, 3)).astype(">u2")
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)
    out = np.asarray(decode(raw_png(7, 5, bit_depth=16, color_type=2, idat=zlib.compress(raw))))
    np.testing.assert_array_equal(out.astype(int), pixels.astype(int) >> 8)


def test_exif_orientation_is_applied() -> None:
    image = photo_like(40, 20)  # landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90 degree clockwise turn
    out = decode(encode(image, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.size == (20, 40)
    expected = np.asarray(image.transpose(Image.Transpose.ROTATE_270), dtype=np.float64)
    assert np.abs(np.asarray(out, dtype=np.float64) - expected).mean() < 6.0


def test_empty_input_is_refused() -> None:
    with pytest.raises(InvalidImage) as info:
        decode(b"")
    assert info.value.code == "empty_image"


def test_garbage_is_refused() -> None:
    with pytest.raises(InvalidImage) as info:
        decode(b"definitely not an image" * 10)
    assert info.value.code == "invalid_image"


def test_truncated_png_is_refused() -> None:
    data = encode(photo_like(64, 64))
    with pytest.raises(InvalidImage) as info:
        decode(data[: len(data) // 2])
    assert info.value.code == "truncated_image"


def test_zero_size_png_is_refused() -> None:
    with pytest.raises(InvalidImage) as info:
        decode(raw_png(0, 10, idat=zlib.compress(b"")))
    assert info.value.code == "invalid_image"


def test_declared_pixel_count_is_checked_before_decoding() -> None:
    # A valid header declaring 3000x3000 with almost no pixel data: decoding would fail as truncated, so
    # the image_too_large code proves the limit was applied to the header alone.
    data = raw_png(3000, 3000, idat=zlib.compress(b"\x00" * 10))
    with pytest.raises(InvalidImage) as info:
        decode(data, max_pixels=1_000_000)
    assert info.value.code == "image_too_large"
    assert "3000x3000" in info.value.message
    with pytest.raises(InvalidImage) as info:
        decode(data, max_pixels=10_000_000)
    assert info.value.code == "truncated_image"


def test_pillow_bomb_guard_maps_to_image_too_large() -> None:
    data = raw_png(100_000, 100_000, idat=zlib.compress(b"\x00"))
    with pytest.raises(InvalidImage) as info:
        decode(data, max_pixels=10**12)
    assert info.value.code == "image_too_large"


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animated_images_are_refused(fmt: str) -> None:
    frames = [Image.new("RGB", (8, 8), (60 * i, 0, 0)) for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format=fmt, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with pytest.raises(InvalidImage) as info:
        decode(buffer.getvalue())
    assert info.value.code == "animated_image"


def test_formats_outside_the_list_are_not_decoded() -> None:
    data = encode(photo_like(8, 8), "TIFF")
    with pytest.raises(InvalidImage):
        decode(data)


def test_content_types() -> None:
    check_image_content_type("image/png", allow_generic=False)
    check_image_content_type("IMAGE/JPEG; charset=binary", allow_generic=False)
    check_image_content_type("application/octet-stream", allow_generic=True)
    for bad in ("text/plain", "application/json", None):
        with pytest.raises(UnsupportedMediaType):
            check_image_content_type(bad, allow_generic=False)


def test_preprocess_is_the_bundle_resize(gtsrb_dir: Path) -> None:
    image = open_rgb(gtsrb_dir / "test_originals" / "00042.png")
    out = preprocess(image)
    expected = np.asarray(image.convert("RGB").resize((50, 50), Image.Resampling.BILINEAR), dtype=np.float32)
    assert out.shape == (3, 50, 50) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected.transpose(2, 0, 1))


def test_preprocess_matches_the_packed_test_array(gtsrb_dir: Path) -> None:
    """The packed 50x50 test set was made with the same resize: our preprocessing reproduces it exactly."""
    z = np.load(gtsrb_dir / "gtsrb50_test_lossless.npz", allow_pickle=False)
    offsets = z["image_offsets"]
    for path in sorted((gtsrb_dir / "test_originals").glob("*.png"))[:5]:
        row = int(path.stem)
        packed = Image.open(io.BytesIO(z["image_bytes"][offsets[row] : offsets[row + 1]].tobytes())).convert(
            "RGB"
        )
        ours = preprocess(open_rgb(path))
        np.testing.assert_array_equal(ours, np.asarray(packed, dtype=np.float32).transpose(2, 0, 1))


def test_to_rgb_leaves_rgb_alone() -> None:
    image = photo_like()
    assert to_rgb(image) is image


def _reference_bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """grid_sample(align_corners=False, zeros) semantics at pixel-edge coordinates (x, y): (K,) -> (K, C)."""
    h, w, _ = image.shape
    xs, ys = x - 0.5, y - 0.5
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    out = np.zeros((x.shape[0], image.shape[2]))
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1 - np.abs(xs - xi)) * (1 - np.abs(ys - yi))
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            out[inside] += weight[inside, None] * image[yi[inside], xi[inside]]
    return out


def test_render_crop_samples_where_the_matrix_says() -> None:
    """Pillow's PERSPECTIVE transform follows our pixel-centre convention: compare with explicit sampling."""
    image = photo_like(90, 70, seed=3)
    a = np.deg2rad(7.0)
    warp = np.array(
        [[0.9 * np.cos(a), -0.9 * np.sin(a), 6.0], [0.9 * np.sin(a), 0.9 * np.cos(a), 1.0], [0, 0, 1]]
    )
    t = crop_transform(warp, image_size=image.size, crop_size=40, frame=(50, 50), box=(7, 7, 43, 43))
    assert t is not None
    crop = np.asarray(render_crop(image, t.image_from_crop, 40), dtype=np.float64)
    u = np.arange(40) + 0.5
    grid_x, grid_y = np.meshgrid(u, u)
    pts = np.stack([grid_x.ravel(), grid_y.ravel(), np.ones(1600)])
    mapped = t.image_from_crop @ pts
    ref = _reference_bilinear(np.asarray(image, dtype=np.float64), mapped[0], mapped[1]).reshape(40, 40, 3)
    assert np.abs(crop - ref).max() <= 1.5  # 8-bit rounding and Pillow's fixed-point weights


def test_identity_warp_crops_the_central_box() -> None:
    t = crop_transform(np.eye(3), image_size=(100, 200), crop_size=36, frame=(50, 50), box=(7, 7, 43, 43))
    assert t is not None
    np.testing.assert_allclose(t.corners, [[14, 28], [86, 28], [86, 172], [14, 172]])
    assert t.scale == pytest.approx(1.0) and t.rotation_deg == pytest.approx(0.0)
    expected = image_from_frame((50, 50), (100, 200)) @ canonical_from_crop((7, 7, 43, 43), 36)
    np.testing.assert_allclose(t.image_from_crop, expected)


def test_scale_and_rotation_of_a_similarity() -> None:
    a = np.deg2rad(-12.0)
    warp = np.array(
        [[1.3 * np.cos(a), -1.3 * np.sin(a), 0], [1.3 * np.sin(a), 1.3 * np.cos(a), 0], [0, 0, 1]]
    )
    t = crop_transform(warp, image_size=(50, 50), crop_size=64, frame=(50, 50), box=(7, 7, 43, 43))
    assert t is not None
    assert t.scale == pytest.approx(1.3) and t.rotation_deg == pytest.approx(-12.0)


def test_homography_corners_and_degenerate_warps() -> None:
    h = np.array([[1.0, 0.05, 0.0], [0.02, 1.0, 0.0], [0.001, -0.002, 1.0]])
    t = crop_transform(h, image_size=(50, 50), crop_size=36, frame=(50, 50), box=(7, 7, 43, 43))
    assert t is not None
    for (cx, cy), corner in zip([(7, 7), (43, 7), (43, 43), (7, 43)], t.corners, strict=True):
        p = h @ np.array([cx, cy, 1.0])
        np.testing.assert_allclose(corner, p[:2] / p[2], rtol=1e-9)
    assert (
        crop_transform(
            np.zeros((3, 3)), image_size=(50, 50), crop_size=36, frame=(50, 50), box=(7, 7, 43, 43)
        )
        is None
    )
    flips = np.array([[1.0, 0, 0], [0, 1.0, 0], [0.0, -0.1, 1.0]])  # w <= 0 inside the crop
    assert (
        crop_transform(flips, image_size=(50, 50), crop_size=36, frame=(50, 50), box=(7, 7, 43, 43)) is None
    )
    nan = np.full((3, 3), np.nan)
    assert crop_transform(nan, image_size=(50, 50), crop_size=36, frame=(50, 50), box=(7, 7, 43, 43)) is None


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_crop_encoders_decode_to_the_crop(fmt: str) -> None:
    crop = photo_like(64, 64, seed=5).filter(ImageFilter.GaussianBlur(1))  # a photo's noise, not dither
    data = encode_crop(crop, fmt, 90)
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.format == fmt.upper() and decoded.size == (64, 64)
        pixels = np.asarray(decoded.convert("RGB"), dtype=np.float64)
    difference = np.abs(pixels - np.asarray(crop, dtype=np.float64)).mean()
    assert difference == 0.0 if fmt == "png" else difference < 3.0  # measured 1.9 (JPEG), 2.2 (WebP)
    url = crop_data_url(crop, fmt, 90)
    assert url.startswith(f"data:{CROP_MEDIA_TYPES[fmt]};base64,")


def test_crop_encoder_refuses_unknown_formats_and_qualities() -> None:
    crop = photo_like(16, 16)
    with pytest.raises(ValueError, match="unknown crop format"):
        encode_crop(crop, "gif", 90)
    with pytest.raises(ValueError, match="quality"):
        encode_crop(crop, "jpeg", 0)


def test_coarse_rendering_of_an_enlarged_crop() -> None:
    """A crop that enlarges a small photo 4x: rendered at 2 samples per source pixel, then enlarged, it stays
    within a grey level or two of the exact rendering on average; a crop that does not enlarge is exact."""
    image = photo_like(40, 40, seed=11)
    enlarge = np.array([[0.25, 0.0, 4.0], [0.0, 0.25, 4.0], [0.0, 0.0, 1.0]])  # 128 crop px -> 32 photo px
    exact = np.asarray(render_crop(image, enlarge, 128), dtype=np.float64)
    coarse = render_crop(image, enlarge, 128, samples_per_pixel=2.0)
    assert coarse.size == (128, 128)
    assert np.abs(np.asarray(coarse, dtype=np.float64) - exact).mean() < 2.0
    same_scale = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 2.0], [0.0, 0.0, 1.0]])  # 36 crop px -> 36 photo px
    np.testing.assert_array_equal(
        np.asarray(render_crop(image, same_scale, 36, samples_per_pixel=2.0)),
        np.asarray(render_crop(image, same_scale, 36)),
    )
