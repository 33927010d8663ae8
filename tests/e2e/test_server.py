"""The real server process classifies real GTSRB uploads like onnxruntime run directly on the bundle."""

from __future__ import annotations

import csv
import json
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from tests.e2e.conftest import SERVERS, ServerProcess, start_server
from tests.e2e.load import LoadGenerator, access_log_statuses, classify_upload
from tests.service.helpers import open_rgb

pytestmark = pytest.mark.e2e


def direct_probabilities(bundle: Path, paths: list[Path]) -> np.ndarray:
    """Softmax of onnxruntime on the bundle with the contract's preprocessing, written out independently:
    Pillow RGB, whole image resized to 50x50 bilinear, CHW float32 0..255."""
    batch = np.stack(
        [
            np.asarray(open_rgb(p).resize((50, 50), Image.Resampling.BILINEAR), np.float32).transpose(2, 0, 1)
            for p in paths
        ]
    )
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"image": batch})
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def labels(gtsrb_dir: Path) -> dict[str, int]:
    with (gtsrb_dir / "test_originals" / "GT-test_originals.csv").open(newline="") as handle:
        return {row["Filename"]: int(row["ClassId"]) for row in csv.DictReader(handle, delimiter=";")}


def check_against_direct(results: list[dict[str, Any]], expected: np.ndarray) -> None:
    for result, probs in zip(results, expected, strict=True):
        got = {p["class_id"]: p["probability"] for p in result["predictions"]}
        for class_id, probability in got.items():
            assert probability == pytest.approx(probs[class_id], rel=1e-4, abs=1e-6)
        top = sorted(got, key=lambda c: -got[c])
        assert top[0] == int(np.argmax(probs)) or probs[top[0]] == pytest.approx(probs.max(), abs=1e-6)


def test_real_uploads_match_onnxruntime(server: ServerProcess, e2e_repo: Path, gtsrb_dir: Path) -> None:
    default = (e2e_repo / "DEFAULT").read_text().strip()
    paths = sorted((gtsrb_dir / "test_originals").glob("*.png"))[::54][:24]  # 24 images across the classes
    expected = direct_probabilities(e2e_repo / default, paths)

    def one(path: Path) -> dict[str, Any]:
        response = httpx.post(
            f"{server.url}/v1/classify?top_k=5",
            content=path.read_bytes(),
            headers={"content-type": "image/png"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return dict(response.json()["results"][0])

    with ThreadPoolExecutor(8) as pool:  # concurrent clients: the server batches them
        results = list(pool.map(one, paths))
    check_against_direct(results, expected)
    for result, path in zip(results, paths, strict=True):
        assert (result["width"], result["height"]) == open_rgb(path).size
        assert result["model"] == default and result["crop"].startswith("data:image/jpeg;base64,")

    card = httpx.get(f"{server.url}/v1/models/{default}").json()
    if card["test_error_clean"] is not None and card["test_error_clean"] <= 0.2:  # a trained model
        truth = labels(gtsrb_dir)
        correct = sum(
            r["predictions"][0]["class_id"] == truth[p.name] for r, p in zip(results, paths, strict=True)
        )
        assert correct >= 0.8 * len(paths), f"{correct}/{len(paths)} correct"

    files = [("file", (p.name, p.read_bytes(), "image/png")) for p in paths[:6]]
    multi = httpx.post(f"{server.url}/v1/models/{default}/classify?crop=none", files=files, timeout=30)
    assert multi.status_code == 200, multi.text
    check_against_direct(multi.json()["results"], expected[:6])
    assert [r["filename"] for r in multi.json()["results"]] == [p.name for p in paths[:6]]


def test_errors_and_metrics_over_the_wire(server: ServerProcess) -> None:
    bad = httpx.post(f"{server.url}/v1/classify", content=b"nope", headers={"content-type": "image/png"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_image"
    assert httpx.get(f"{server.url}/v1/models/none").status_code == 404
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'stn_rejections_total{reason="invalid_image"}' in metrics
    assert 'route="/v1/classify",status="422"' in metrics


def test_structured_logs_carry_request_ids(server: ServerProcess) -> None:
    response = httpx.get(f"{server.url}/v2/health/live", headers={"X-Request-ID": "e2e-log-check"})
    assert response.headers["x-request-id"] == "e2e-log-check"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "e2e-log-check" not in server.log():
        time.sleep(0.05)
    entries = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    access = [e for e in entries if e.get("request_id") == "e2e-log-check"]
    assert access and access[0]["route"] == "/v2/health/live" and access[0]["status"] == 200
    assert any(e["message"].startswith("service ready") for e in entries)


#: A transport error is a clean refusal only for a request the server never started (see the shutdown test).
REFUSED = {"ConnectError", "RemoteProtocolError", "ReadError", "WriteError"}
EXIT_BOUND_S = 10.0  # SIGTERM to exit, with SERVICE_SHUTDOWN_TIMEOUT_S at its default of 20 s


def requests_in_flight(server: ServerProcess) -> float:
    """The server's ``stn_requests_in_flight`` (this /metrics request itself counts one)."""
    for line in httpx.get(f"{server.url}/metrics", timeout=10).text.splitlines():
        if line.startswith("stn_requests_in_flight "):
            return float(line.split()[1])
    raise AssertionError("no stn_requests_in_flight on /metrics")


@pytest.mark.parametrize("server_name", SERVERS)
def test_graceful_shutdown_finishes_in_flight_requests(
    e2e_repo: Path, gtsrb_dir: Path, tmp_path: Path, server_name: str
) -> None:
    """SIGTERM while a 32-image request is in flight and three clients classify without pause: the big
    request and every request the server started finish with 200; every other request is refused cleanly
    (connection refused, or its idle keep-alive connection closed before the server read it, or 503), never a
    500 and never left hanging; the process exits within EXIT_BOUND_S, after "shutdown complete".

    The big request is in flight for sure: all of its body but the last chunk is sent, the server reports it
    in progress (/metrics), and the last chunk goes out only after the signal."""
    server = start_server(
        e2e_repo, tmp_path / "service.log", SERVICE_MAX_IMAGES_PER_REQUEST="32", SERVICE_SERVER=server_name
    )
    send_last_chunk = threading.Event()
    try:
        paths = sorted((gtsrb_dir / "test_originals").glob("*.png"))[:32]
        big = httpx.Request(
            "POST",
            f"{server.url}/v1/classify?crop_size=512",
            files=[("file", (p.name, p.read_bytes(), "image/png")) for p in paths],
        )
        body = big.read()
        all_but_last_sent = threading.Event()

        def chunks() -> Iterator[bytes]:
            """The body in pieces; the last one waits for ``send_last_chunk`` (set after the signal)."""
            cut = len(body) - 4096
            for start in range(0, cut, 4096):
                yield body[start : min(start + 4096, cut)]
            all_but_last_sent.set()
            send_last_chunk.wait(30)
            yield body[cut:]

        box: dict[str, Any] = {}

        def big_request() -> None:
            headers = {"content-type": big.headers["content-type"], "content-length": str(len(body))}
            box["response"] = httpx.post(big.url, content=chunks(), headers=headers, timeout=60)
            box["finished"] = time.monotonic()

        thread = threading.Thread(target=big_request)
        thread.start()
        assert all_but_last_sent.wait(30)
        deadline = time.monotonic() + 10
        while requests_in_flight(server) < 2:  # the scrape itself and the big request
            assert time.monotonic() < deadline, "the server never started the big request"
            time.sleep(0.01)
        with LoadGenerator(server.url, classify_upload(paths[0].read_bytes()), clients=3) as load:
            load.wait_for(lambda o: o.status == 200, 3)
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            send_last_chunk.set()  # the rest of the body arrives while the server drains
            code = server.process.wait(30)  # no second signal: that would force an exit without drain
            exited = time.monotonic()
            thread.join(60)
            outcomes = load.stop()
        assert code in (0, -signal.SIGTERM), server.log()  # uvicorn re-raises SIGTERM after its graceful exit
        assert exited - signalled < EXIT_BOUND_S
        assert box["response"].status_code == 200 and len(box["response"].json()["results"]) == 32
        assert box["finished"] > signalled  # it was in flight at the signal and drained
        messages = [json.loads(x)["message"] for x in server.log().splitlines() if x.startswith("{")]
        assert "shutdown complete" in messages
        logged = access_log_statuses(server)  # what the server started and answered, by request id
        for outcome in outcomes:
            if outcome.status is None:
                assert outcome.error in REFUSED, outcome  # a ReadTimeout is a hang
                assert outcome.request_id not in logged, outcome  # it never started: nothing was lost
            else:
                assert outcome.status in (200, 503), outcome
                assert logged[outcome.request_id] == outcome.status
                if outcome.status == 503:
                    assert "retry-after" in outcome.headers, outcome
        assert all(status in (200, 503) for rid, status in logged.items() if rid.startswith("load-"))
        refused_while_draining = [o for o in outcomes if o.status is None and signalled < o.started < exited]
        assert refused_while_draining, "no request was refused between the signal and the exit"
    finally:
        send_last_chunk.set()
        server.stop()
