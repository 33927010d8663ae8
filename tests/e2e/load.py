"""Client load for the e2e fault tests: threads that send requests again and again and record every outcome.

Every request carries its own ``X-Request-ID`` (``<name>-<client>-<n>``), so an outcome can be matched with
the server's access log (:func:`access_log_statuses`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.e2e.conftest import ServerProcess

Send = Callable[[httpx.Client, str], httpx.Response]
"""Sends one request with the given request id over the client's pooled connections."""


@dataclass(frozen=True)
class Outcome:
    """What one request got: a response (``status``), or a transport error (``error``, status None).

    Attributes:
        request_id: the ``X-Request-ID`` it was sent with.
        started: ``time.monotonic()`` before sending.
        finished: ``time.monotonic()`` after the response or the error.
        status: the HTTP status, None when no response came back.
        error: the httpx exception's class name for a transport error (``ConnectError``: refused;
            ``ReadTimeout``: the server hung), else None.
        headers: the response headers (lower-case names).
        body: the JSON body, or None.
    """

    request_id: str
    started: float
    finished: float
    status: int | None
    error: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None

    @property
    def version(self) -> str | None:
        """The model version of a 200 classify answer."""
        return self.body.get("version") if self.status == 200 and isinstance(self.body, dict) else None


class LoadGenerator:
    """``clients`` threads, each with its own ``httpx.Client``, calling ``send`` until :meth:`stop`.

    After a transport error a client pauses ``pause_after_error`` seconds before its next request (no busy
    loop against a closed port). Use as a context manager or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        url: str,
        send: Send,
        *,
        clients: int = 4,
        timeout: float = 30.0,
        pause_after_error: float = 0.02,
        name: str = "load",
    ):
        self.url = url
        self.send = send
        self.timeout = timeout
        self.pause_after_error = pause_after_error
        self.name = name
        self._outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(i,), name=f"{name}-{i}", daemon=True)
            for i in range(clients)
        ]

    def __enter__(self) -> LoadGenerator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 60.0) -> list[Outcome]:
        """Stop sending, wait for the requests under way (a client still waiting after ``timeout`` is a hang:
        TimeoutError), and return every outcome in the order they finished."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                raise TimeoutError(f"{thread.name} still waits for a response after {timeout} s")
        return self.outcomes()

    def outcomes(self) -> list[Outcome]:
        with self._lock:
            return list(self._outcomes)

    def wait_for(self, predicate: Callable[[Outcome], bool], count: int, timeout: float = 30.0) -> None:
        """Wait until ``count`` outcomes satisfy ``predicate`` (TimeoutError after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while sum(predicate(o) for o in self.outcomes()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {count} matching outcomes after {timeout} s")
            time.sleep(0.01)

    def _client(self, index: int) -> None:
        with httpx.Client(base_url=self.url, timeout=self.timeout) as client:
            n = 0
            while not self._stop.is_set():
                request_id = f"{self.name}-{index}-{n}"
                n += 1
                started = time.monotonic()
                try:
                    response = self.send(client, request_id)
                except httpx.TransportError as exc:  # refused, reset, or a timeout (a hang)
                    outcome = Outcome(request_id, started, time.monotonic(), None, error=type(exc).__name__)
                else:
                    try:
                        body = response.json()
                    except ValueError:
                        body = None
                    outcome = Outcome(
                        request_id,
                        started,
                        time.monotonic(),
                        response.status_code,
                        headers=dict(response.headers),
                        body=body,
                    )
                with self._lock:
                    self._outcomes.append(outcome)
                if outcome.status is None:
                    time.sleep(self.pause_after_error)


def classify_upload(upload: bytes, top_k: int = 3) -> Send:
    """A load client's request: ``upload`` (a PNG) as the raw body to ``/v1/classify``, no crop."""

    def send(client: httpx.Client, request_id: str) -> httpx.Response:
        headers = {"content-type": "image/png", "X-Request-ID": request_id}
        return client.post(f"/v1/classify?top_k={top_k}&crop=none", content=upload, headers=headers)

    return send


def access_log_statuses(server: ServerProcess) -> dict[str, int]:
    """Request id -> status of every request the server's access log (JSON lines) recorded."""
    statuses: dict[str, int] = {}
    for line in server.log().splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry.get("logger") == "service.access":
            statuses[str(entry["request_id"])] = int(entry["status"])
    return statuses
