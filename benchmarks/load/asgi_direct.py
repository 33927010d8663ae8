"""The ASGI application called in process, without a network: CPU time per classify request.

Run as ``python -m benchmarks.load.asgi_direct MODELS_DIR MODEL COUNT CONCURRENCY STUB`` with the uploads on
stdin as JSON ``[[name, hex bytes], ...]`` (benchmarks/request_profile.py does); prints the CPU microseconds
per ``POST /v1/classify?crop=none`` of ``COUNT`` requests, ``CONCURRENCY`` at a time, after 200 unmeasured
ones. ``STUB`` 1 replaces onnxruntime by its cached outputs per batch size (the same shapes and values, no
compute), so the difference between the two runs is the model as it runs inside the service. The access log
is written, to the null device. A child process of its own: a fresh metrics registry, its own event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import uvloop

from service.app import create_app
from service.logs import configure_logging
from service.settings import Settings

QUERY = b"crop=none"


def stub_inference() -> None:
    """Make the repository's batches return cached onnxruntime outputs (one real call per batch size)."""
    import service.repository as repository

    real = repository.run_batch
    cache: dict[int, Any] = {}

    def cached(session: Any, card: Any, images: Any) -> Any:
        if len(images) not in cache:
            cache[len(images)] = real(session, card, images)
        return cache[len(images)]

    repository.run_batch = cached  # type: ignore[assignment]


async def measure(app: Any, bodies: list[tuple[bytes, bytes]], count: int, concurrency: int) -> float:
    """CPU microseconds per request over ``count`` requests after a warm-up."""

    async def one(i: int) -> None:
        body, kind = bodies[i % len(bodies)]
        headers = [(b"host", b"x"), (b"content-type", kind), (b"content-length", str(len(body)).encode())]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/classify",
            "raw_path": b"/v1/classify",
            "query_string": QUERY,
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        delivered = False
        statuses: list[int] = []

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)  # the client never disconnects
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(scope, receive, send)
        if statuses != [200]:
            raise RuntimeError(f"status {statuses}")

    async with app.router.lifespan_context(app):
        for i in range(200):
            await one(i)
        start = time.process_time()

        async def worker(k: int) -> None:
            for i in range(k, count, concurrency):
                await one(i)

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        return (time.process_time() - start) / count * 1e6


def main() -> None:
    models_dir, model, count, concurrency, stub = sys.argv[1:6]
    uploads = [(name, bytes.fromhex(data)) for name, data in json.load(sys.stdin)]
    if stub == "1":
        stub_inference()
    configure_logging("info", "json")
    logging.getLogger().handlers[0].stream = open(os.devnull, "w")  # noqa: SIM115 (lives as long as the run)
    settings = Settings(
        models_dir=Path(models_dir), default_model=model, intra_op_threads=1, execution_provider="cpu"
    )
    app = create_app(settings)
    bodies = []
    for name, data in uploads:
        request = httpx.Request(
            "POST", "http://x/v1/classify?crop=none", files=[("file", (name, data, "image/png"))]
        )
        bodies.append((request.read(), request.headers["content-type"].encode()))
    print(uvloop.run(measure(app, bodies, int(count), int(concurrency))))


if __name__ == "__main__":
    main()
