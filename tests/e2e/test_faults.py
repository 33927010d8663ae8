"""Fault injection against the real HTTP server: hot reloads and broken bundles pushed under load, clients
that disconnect while their images wait in the batch queue, and a flood far beyond what the queue holds.

SIGTERM under load is ``test_graceful_shutdown_finishes_in_flight_requests`` in test_server.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from tests.e2e.conftest import ServerProcess, free_port, start_server
from tests.e2e.load import LoadGenerator, Outcome, classify_upload
from tests.service.bundle_factory import break_bundle, set_version
from tests.service.conftest import make_settings
from tests.service.gate import Background, Gate, wait_until
from tests.service.helpers import encode, photo_like, sample

pytestmark = pytest.mark.e2e

API_KEY = "fault-key"
ADMIN = {"X-API-Key": API_KEY}
PNG = {"content-type": "image/png"}
TOP_K = 3
MEMORY_BOUND_MIB = 64.0  # see test_a_flood_gets_only_200_or_503_and_memory_stays_bounded


@pytest.fixture(scope="module")
def upload(gtsrb_dir: Path) -> bytes:
    """One real GTSRB test photo (PNG, original resolution)."""
    return sorted((gtsrb_dir / "test_originals").glob("*.png"))[0].read_bytes()


@pytest.fixture
def bundle_repo(e2e_repo: Path, tmp_path: Path) -> Path:
    """A writable model repository: a copy of the default bundle and DEFAULT."""
    name = default_model(e2e_repo)
    root = tmp_path / "models"
    root.mkdir()
    shutil.copytree(e2e_repo / name, root / name)
    (root / "DEFAULT").write_text(name + "\n", encoding="utf-8")
    return root


def default_model(repo: Path) -> str:
    return (repo / "DEFAULT").read_text(encoding="utf-8").strip()


def assert_classified(outcome: Outcome) -> None:
    """A 200 with one well-formed result: top-k classes, most probable first, probabilities of a softmax."""
    assert outcome.status == 200, outcome
    (result,) = outcome.body["results"]
    assert result["version"] == outcome.body["version"]
    probabilities = [p["probability"] for p in result["predictions"]]
    assert len(probabilities) == TOP_K and probabilities == sorted(probabilities, reverse=True)
    assert 0.0 < sum(probabilities) <= 1.0 + 1e-9
    assert result["transform"] is None or len(result["transform"]["matrix"]) == 3


def brief(outcome: Outcome) -> tuple[str, int | None, str | None, Any]:
    """An outcome without its headers and timings, for assertion messages."""
    return outcome.request_id, outcome.status, outcome.error, outcome.body


def scrape(server: ServerProcess, name: str, labels: dict[str, str]) -> float:
    """One sample of the server's /metrics (0.0 when the series does not exist)."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for metric in family.samples:
            if metric.name == name and metric.labels == labels:
                return float(metric.value)
    return 0.0


def reload(server: ServerProcess, name: str) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/models/{name}/reload", headers=ADMIN, timeout=60)


def test_hot_reloads_under_load_lose_no_request(bundle_repo: Path, upload: bytes, tmp_path: Path) -> None:
    """Four reloads while four clients classify without pause: every request gets a 200 with a valid result,
    the answers move from the old version through every new one, and no client ever sees a version older than
    one it already got (each request runs wholly on the version it started with)."""
    name = default_model(bundle_repo)
    server = start_server(bundle_repo, tmp_path / "service.log", SERVICE_API_KEY=API_KEY)
    try:
        old = httpx.get(f"{server.url}/v1/models/{name}").json()["version"]
        versions = [old] + [f"{old}-reload{k}" for k in range(1, 5)]
        with LoadGenerator(server.url, classify_upload(upload, TOP_K), clients=4) as load:
            load.wait_for(lambda o: o.version == old, 8)
            for version in versions[1:]:
                set_version(bundle_repo / name, version)
                response = reload(server, name)
                assert response.status_code == 200, response.text
                assert response.json()["version"] == version
                load.wait_for(lambda o, v=version: o.version == v, 4)  # clients get it, the load goes on
            outcomes = load.stop()
        assert scrape(server, "stn_model_reloads_total", {"model": name, "result": "success"}) == 5
    finally:
        server.stop()
    failed = [o for o in outcomes if o.status != 200]
    assert not failed, f"{len(failed)} of {len(outcomes)} failed, e.g. {[brief(o) for o in failed[:3]]}"
    for outcome in outcomes:
        assert_classified(outcome)
    assert {o.version for o in outcomes} == set(versions)
    rank = {v: i for i, v in enumerate(versions)}
    per_client: dict[str, list[int]] = defaultdict(list)
    for outcome in sorted(outcomes, key=lambda o: o.started):  # one client's requests are sequential
        per_client[outcome.request_id.rsplit("-", 1)[0]].append(rank[str(outcome.version)])
    for client, seen in per_client.items():
        assert seen == sorted(seen), f"{client} went back to an older version: {seen}"


BROKEN = ("bad_json", "missing_onnx", "corrupt_onnx", "sha256_mismatch")


def test_broken_bundles_under_load_are_refused_and_the_old_keeps_serving(
    bundle_repo: Path, upload: bytes, tmp_path: Path
) -> None:
    """Each broken bundle pushed under load is refused (422 invalid_bundle) while every request, during and
    after, is served by the old version; an intact bundle then still reloads (no lock or state left over)."""
    name = default_model(bundle_repo)
    folder = bundle_repo / name
    pristine = tmp_path / "pristine"
    shutil.copytree(folder, pristine)
    server = start_server(bundle_repo, tmp_path / "service.log", SERVICE_API_KEY=API_KEY)
    try:
        card = httpx.get(f"{server.url}/v1/models/{name}").json()
        with LoadGenerator(server.url, classify_upload(upload, TOP_K), clients=4) as load:
            load.wait_for(lambda o: o.status == 200, 8)
            for how in BROKEN:
                break_bundle(folder, how)
                response = reload(server, name)
                assert response.status_code == 422, (how, response.text)
                assert response.json()["error"]["code"] == "invalid_bundle"
                load.wait_for(lambda o: True, len(load.outcomes()) + 8)  # still serving after the refusal
                shutil.rmtree(folder)
                shutil.copytree(pristine, folder)
            again = reload(server, name)
            assert again.status_code == 200, again.text
            assert again.json()["sha256"] == card["onnx"]["sha256"]
            load.wait_for(lambda o: True, len(load.outcomes()) + 8)
            outcomes = load.stop()
        assert httpx.get(f"{server.url}/v1/models/{name}").json()["onnx"]["sha256"] == card["onnx"]["sha256"]
        assert scrape(server, "stn_model_reloads_total", {"model": name, "result": "failure"}) == len(BROKEN)
    finally:
        server.stop()
    failed = [o for o in outcomes if o.status != 200]
    assert not failed, f"{len(failed)} of {len(outcomes)} failed, e.g. {[brief(o) for o in failed[:3]]}"
    for outcome in outcomes:
        assert_classified(outcome)
        assert outcome.version == card["version"]


@contextlib.contextmanager
def serve_in_thread(app: FastAPI) -> Iterator[int]:
    """Serve ``app`` with a real uvicorn server (its own event loop, in a thread) on a free loopback port, so
    a test can hold the app's inference with a :class:`Gate`; yields the port. The lifespan runs."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(30)


def open_request(port: int, path: str, files: list[tuple[str, tuple[str, bytes, str]]]) -> socket.socket:
    """Send a multipart POST over a raw socket and return the socket without reading the answer."""
    request = httpx.Request("POST", f"http://127.0.0.1:{port}{path}", files=files)
    body = request.read()
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        f"content-type: {request.headers['content-type']}\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head.encode("latin-1") + body)
    return sock


def test_a_client_that_disconnects_leaves_no_work_in_the_queue(e2e_repo: Path, upload: bytes) -> None:
    """Inference is held on one image; three clients queue two images each and hang up. Their six images leave
    the queue at once (counted), never reach onnxruntime, and the freed queue accepts a full request."""
    settings = make_settings(e2e_repo, queue_size=8, max_batch_size=1, max_delay_ms=0.0)
    app = create_app(settings)
    two = [("file", (f"{i}.png", upload, "image/png")) for i in range(2)]
    eight = [("file", (f"{i}.png", upload, "image/png")) for i in range(8)]
    with serve_in_thread(app) as port, httpx.Client(timeout=30) as http:
        url = f"http://127.0.0.1:{port}/v1/classify?crop=none"
        model = app.state.repository.get(None)
        registry = app.state.metrics.registry
        labels = {"model": model.name, "version": model.version}
        gate = Gate(model.batcher.runner)
        model.batcher.runner = gate
        try:
            blocker = Background(http, url, content=upload, headers=PNG)
            assert gate.entered.wait(10)  # its image is inside onnxruntime, held
            sockets = [open_request(port, "/v1/classify?crop=none", two) for _ in range(3)]
            wait_until(lambda: model.batcher.depth == 6)
            for sock in sockets:
                sock.close()
            wait_until(lambda: model.batcher.depth == 0, timeout=5)  # freed while inference is still held
            route = {"route": "/v1/classify", "status": "499"}
            wait_until(lambda: sample(registry, "stn_requests_total", route) == 3, timeout=5)
            assert sample(registry, "stn_images_dropped_total", labels) == 6
            assert sample(registry, "stn_client_disconnects_total") == 3
            full = Background(http, url, files=eight)
            wait_until(lambda: model.batcher.depth == 8)  # the whole queue is free again
        finally:
            gate.release.set()
        assert blocker.result().status_code == 200
        response = full.result()
        assert response.status_code == 200 and len(response.json()["results"]) == 8
    assert gate.calls == 1 + 8  # one image per call: the six dropped images never ran
    assert sample(registry, "stn_batch_size_sum", labels) == 1 + 8


@dataclass(frozen=True)
class Memory:
    """A process's resident memory from /proc/PID/status, MiB: now (VmRSS) and its peak so far (VmHWM)."""

    rss: float
    peak: float

    @classmethod
    def of(cls, pid: int) -> Memory:
        values: dict[str, float] = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(value.split()[0]) / 1024.0  # kB
        return cls(rss=values["VmRSS"], peak=values["VmHWM"])


async def flood(url: str, files: Any, *, requests: int, concurrency: int) -> list[httpx.Response | Exception]:
    """``requests`` classify requests, ``concurrency`` at a time over as many connections."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        slots = asyncio.Semaphore(concurrency)

        async def one() -> httpx.Response:
            async with slots:
                return await client.post("/v1/classify?crop=none", files=files)

        return list(await asyncio.gather(*(one() for _ in range(requests)), return_exceptions=True))


def test_a_flood_gets_only_200_or_503_and_memory_stays_bounded(e2e_repo: Path, tmp_path: Path) -> None:
    """64 concurrent requests of two 400x400 photos against a queue of 8 images and at most 8 requests in
    progress: only 200s and 503s (overloaded, with Retry-After), and the server's resident memory, its peak
    during the flood included, grows by at most MEMORY_BOUND_MIB over its warmed-up size.

    The bound: a request in progress holds its body (2 x 340 kB), the multipart parts read from it, two
    decoded 400x400 RGB images (470 kB each) and their network inputs: under 4 MiB, so 8 requests in progress
    hold under 32 MiB; another 32 MiB allow for the allocator's arenas and fragmentation (the peak grew by 16
    to 26 MiB in trials). A refused request's body is never read. Without the limit on requests in progress
    all 64 requests are read and decoded at once: the peak grew by 105 to 130 MiB."""
    photo = encode(photo_like(400, 400))
    files = [("file", (f"{i}.png", photo, "image/png")) for i in range(2)]
    server = start_server(
        e2e_repo,
        tmp_path / "service.log",
        SERVICE_QUEUE_SIZE="8",
        SERVICE_MAX_BATCH_SIZE="4",
        SERVICE_MAX_CONCURRENT_REQUESTS="8",
        SERVICE_RETRY_AFTER_S="2",
    )
    try:
        asyncio.run(flood(server.url, files, requests=16, concurrency=4))  # warm-up: buffers, batch shapes
        before = Memory.of(server.process.pid)
        answers = asyncio.run(flood(server.url, files, requests=192, concurrency=64))
        after = Memory.of(server.process.pid)
    finally:
        server.stop()
    errors = [a for a in answers if isinstance(a, Exception)]
    assert not errors, errors[:3]
    responses = [a for a in answers if isinstance(a, httpx.Response)]
    statuses = {r.status_code for r in responses}
    assert statuses == {200, 503}, statuses
    for response in responses:
        if response.status_code == 503:
            assert response.headers["retry-after"] == "2"
            assert response.json()["error"]["code"] == "overloaded"
        else:
            assert len(response.json()["results"]) == 2
    assert after.peak - before.rss <= MEMORY_BOUND_MIB, (before, after)
    assert after.rss - before.rss <= MEMORY_BOUND_MIB, (before, after)
