"""A subset of the image corpus against the real service process: it answers every upload and stays alive.

``python -m service`` (tests/e2e/conftest.py's ``start_server``) gets every bomb, animated and EXIF sample and
every fourth other one (raw body and multipart, the same checks as in process), then uploads that the
client abandons (a body shorter than its Content-Length, a chunked body cut off, a multipart body cut inside
its file) and bytes that are not HTTP. Afterwards the same process (same pid) is alive, answers
``/v2/health/live`` and classifies a normal image, and its log has no unhandled error.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import start_server
from tests.fuzz import checks
from tests.fuzz.corpus import Sample

pytestmark = pytest.mark.e2e


def subset(corpus: list[Sample]) -> list[Sample]:
    always = {"bomb", "animated", "exif"}
    return [s for i, s in enumerate(corpus) if s.family in always or i % 4 == 0]


def send_and_drop(port: int, payload: bytes) -> None:
    """Send raw bytes on a fresh connection, read what comes back (if anything) briefly, close.

    The server may close (or reset) the connection as soon as it sees bytes that are not HTTP; that is a
    fine answer, so errors of the socket after the connection was made are ignored.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(2)
            while sock.recv(65536):
                pass
        except OSError:  # TimeoutError, ConnectionError, ENOTCONN after the server's reset
            pass


def abandoned_uploads(png: bytes) -> list[bytes]:
    head = b"POST /v1/classify HTTP/1.1\r\nHost: fuzz\r\n"
    form = b'--fuzz\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n' + png
    return [
        head + b"Content-Type: image/png\r\nContent-Length: %d\r\n\r\n" % (len(png) * 2) + png,
        head + b"Content-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % len(png) + png[:100],
        head + b"Content-Type: multipart/form-data; boundary=fuzz\r\nContent-Length: 999999\r\n\r\n" + form,
        head + b"Content-Type: image/png\r\nContent-Length: -5\r\n\r\n",
        head + b"Content-Type: image/png\r\nContent-Length: 99999999999999999999\r\n\r\n" + png[:10],
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(200),  # a TLS ClientHello on the plain port
        b"GARBAGE / HTTP/9.9\r\n\r\n",
        b"\x00" * 4096,
    ]


def test_real_server_survives_a_corpus_subset(e2e_repo: Path, corpus: list[Sample], tmp_path: Path) -> None:
    server = start_server(e2e_repo, tmp_path / "service.log")
    try:
        pid = server.process.pid
        reference = next(s.data for s in corpus if s.name == "sign0.png")
        with httpx.Client(base_url=server.url, timeout=60.0) as http:
            model = http.get("/v1/models").json()["default"]
            card: dict[str, Any] = http.get(f"/v1/models/{model}").json()
            failures = []
            for sample in subset(corpus):
                try:
                    checks.check_sample(http, sample, card, reference)
                except AssertionError as exc:
                    failures.append(f"{sample.name}: {exc}")
            assert not failures, "\n".join(failures)
            for payload in abandoned_uploads(reference):
                send_and_drop(server.port, payload)
            assert server.process.poll() is None, f"the service exited:\n{server.log()}"
            os.kill(pid, 0)  # the same process, still there
            live = http.get("/v2/health/live")
            assert live.status_code == 200 and live.json() == {"live": True}
            checks.check_serves(http, reference, card)
        log = server.log()
        assert "unhandled error" not in log and "Traceback" not in log, log[-3000:]
    finally:
        server.stop()
