"""Helpers for the service tests: the TestClient import, image encoders, metric reads."""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pytest
from fastapi import FastAPI
from PIL import Image
from prometheus_client import CollectorRegistry

with warnings.catch_warnings():
    # Starlette 1.x prefers the httpx2 package for its TestClient and warns (a UserWarning) when it falls back
    # to httpx, which the dev extra installs; the TestClient works the same with either.
    warnings.filterwarnings(
        "ignore", message=r"Using `httpx` with `starlette\.testclient`", category=UserWarning
    )
    from fastapi.testclient import TestClient

__all__ = [
    "TestClient",
    "encode",
    "gtsrb_originals",
    "missing_system_package",
    "photo_like",
    "png_chunk",
    "raw_png",
    "sample",
]


def in_ci() -> bool:
    """Whether the tests run in CI (``CI=true``, as .ci/run is started)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def missing_system_package(message: str) -> NoReturn:
    """End a test that needs a system package (chromium, prometheus) which is not installed.

    Outside CI the test skips. Under ``CI=true`` it fails: .ci/run installs those packages, so a missing one
    there means the check did not run, which must not pass unnoticed as a skip.
    """
    if in_ci():
        pytest.fail(
            f"{message}; CI=true requires it (.ci/run installs it), so this fails instead of skipping"
        )
    pytest.skip(message)


def encode(image: Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    """Encode a Pillow image to bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def raw_png(
    width: int, height: int, *, bit_depth: int = 8, color_type: int = 2, idat: bytes | None = None
) -> bytes:
    """A PNG written by hand (any declared size, any IDAT), for zero-size, bomb and 16-bit cases."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    body = png_chunk(b"IHDR", header)
    if idat is not None:
        body += png_chunk(b"IDAT", idat)
    return b"\x89PNG\r\n\x1a\n" + body + png_chunk(b"IEND", b"")


def sample(registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float:
    """A metric sample's value, 0.0 when the series does not exist yet."""
    value = registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else float(value)


def gtsrb_originals(gtsrb_dir: Path, count: int, stride: int = 1) -> list[Path]:
    """``count`` real GTSRB test images at original resolution (every ``stride``-th, sorted by name)."""
    paths = sorted((gtsrb_dir / "test_originals").glob("*.png"))
    chosen = paths[::stride][:count]
    if len(chosen) < count:
        raise FileNotFoundError(f"only {len(chosen)} images in {gtsrb_dir / 'test_originals'}")
    return chosen


def photo_like(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    """A deterministic RGB image with structure (gradients + blobs), not flat noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 255 * x / max(width - 1, 1)
    g = 255 * y / max(height - 1, 1)
    b = 127 + 100 * np.sin(x / 5.0) * np.cos(y / 7.0)
    rgb = np.stack([r, g, b], axis=-1) + rng.normal(0, 8, (height, width, 3))
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def open_rgb(path: Path) -> Image.Image:
    """Load an image file fully and close it (no ResourceWarning), converted to RGB."""
    with Image.open(path) as image:
        return image.convert("RGB")


def app_state(client: TestClient) -> Any:
    """The FastAPI app's ``state`` (metrics, repository) behind a TestClient."""
    app = client.app
    if not isinstance(app, FastAPI):
        raise TypeError(f"expected a FastAPI app, got {type(app).__name__}")
    return app.state


def registry_of(client: TestClient) -> CollectorRegistry:
    """The Prometheus registry of the app behind a TestClient."""
    registry: CollectorRegistry = app_state(client).metrics.registry
    return registry


def call_asgi(
    client: TestClient, path: str, headers: dict[str, str], messages: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], int]:
    """Send one POST straight into the app of a started TestClient, on its event loop, for what an HTTP client
    cannot do (leave mid-upload) or see (whether the app read the body).

    ``receive`` hands out ``messages`` one by one, then ``http.disconnect`` (what a server does once the
    client is gone). Returns the messages the app sent and how many times it called ``receive``.
    """
    sent: list[dict[str, Any]] = []
    pending = list(messages)
    calls = 0

    async def receive() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }

    async def run() -> None:
        await client.app(scope, receive, send)

    if client.portal is None:
        raise RuntimeError("the TestClient is not started (use it as a context manager)")
    client.portal.call(run)
    return sent, calls
