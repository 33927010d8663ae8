"""One pure-ASGI middleware for every HTTP request: request id, body-size limit, client disconnects, metrics,
access log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logs import request_id_var
from service.metrics import ServiceMetrics

log = logging.getLogger("service.access")

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_KEY = REQUEST_ID_HEADER.encode("latin-1")
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
UNMATCHED_ROUTE = "unmatched"
CLIENT_CLOSED_REQUEST = 499
"""The status recorded (metrics, access log) for a request whose client left before the response (nginx's)."""


def route_label(scope: Scope) -> str:
    """The matched route's path template (e.g. ``/v1/models/{name}/classify``), never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


class BodyTooLarge(HTTPException):
    """The request body exceeds ``max_body_bytes`` (413, code ``payload_too_large``).

    An ``HTTPException`` rather than a :class:`~service.errors.ServiceError`: FastAPI re-raises HTTP
    exceptions that happen while it reads a JSON body (v2 infer) but turns any other exception into a 400.
    """

    def __init__(self, message: str):
        super().__init__(status_code=413, detail=message)


INTERNAL_ERROR_MESSAGE = "internal error; see the server log for this request id"


async def send_internal_error(scope: Scope, send: Send, request_id: str) -> None:
    """A 500 JSON answer in the route family's error shape (``/v2``: the Open Inference Protocol's), with the
    request id."""
    if str(scope.get("path", "")).startswith("/v2"):
        payload: dict[str, Any] = {"error": INTERNAL_ERROR_MESSAGE, "request_id": request_id}
    else:
        payload = {
            "error": {"code": "internal_error", "message": INTERNAL_ERROR_MESSAGE, "request_id": request_id}
        }
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 500, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@dataclass(frozen=True)
class _RequestSeries:
    """The Prometheus series one finished request updates."""

    count: Counter
    duration: Histogram

    def observe(self, seconds: float) -> None:
        self.count.inc()
        self.duration.observe(seconds)


class RequestMiddleware:
    """Per request: take or make an ``X-Request-ID`` (echoed in the response), refuse bodies over
    ``max_body_bytes`` (413, also for chunked bodies without Content-Length), cancel the request when its
    client disconnects before the response, count requests by route and status, time them, track requests in
    flight, write one access-log line, and turn an unexpected exception into a JSON 500 carrying the request
    id (logged with its traceback).

    Disconnects: once the app has read the whole body, a watcher task waits for the server's
    ``http.disconnect``; if it comes before the response started, the request's task is cancelled, so its
    images leave the batch queue (:meth:`service.inference.DynamicBatcher.submit`) instead of running for
    nobody. Such a request, and one whose client left while its body was being read, is recorded with status
    499 and counted in ``client_disconnects``.
    """

    def __init__(self, app: ASGIApp, *, metrics: ServiceMetrics, max_body_bytes: int):
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self._bound: dict[tuple[str, int], _RequestSeries] = {}

    def _series(self, route: str, status: int) -> _RequestSeries:
        """The request counter and duration histogram of (route, status), labels bound once: routes are
        templates and statuses few, so the table stays small."""
        series = self._bound.get((route, status))
        if series is None:
            series = self._bound[(route, status)] = _RequestSeries(
                self.metrics.requests.labels(route, str(status)), self.metrics.request_duration.labels(route)
            )
        return series

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = declared = ""
        for key, value in scope.get("headers", ()):  # ASGI servers send the names in lower case
            if key == _REQUEST_ID_KEY:
                given = value.decode("latin-1")
            elif key == b"content-length":
                declared = value.decode("latin-1")
        request_id = given if _VALID_REQUEST_ID.match(given) else secrets.token_hex(8)
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        start = time.perf_counter()
        received = 0
        limit = self.max_body_bytes
        too_large_declared = declared.isdigit() and int(declared) > limit

        status_sent = False
        client_gone = False
        body_read = asyncio.Event()

        async def limited_receive() -> Message:
            nonlocal received, client_gone
            if too_large_declared:
                raise BodyTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(f"request body exceeds the limit of {limit} bytes")
                if not message.get("more_body", False):
                    body_read.set()
            elif message["type"] == "http.disconnect" and not status_sent:
                client_gone = True
            return message

        task = asyncio.current_task()

        async def cancel_on_disconnect() -> None:
            """After the body: wait for the client to go away; cancel the request if no response started."""
            nonlocal client_gone
            await body_read.wait()
            while (await receive())["type"] != "http.disconnect":
                pass
            if not status_sent and task is not None:
                client_gone = True
                task.cancel()

        async def send_with_id(message: Message) -> None:
            nonlocal status, status_sent
            if message["type"] == "http.response.start":
                status = int(message["status"])
                status_sent = True
                raw: list[Any] = list(message.get("headers", []))
                raw.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": raw}
            await send(message)

        self.metrics.in_flight.inc()
        watcher = asyncio.create_task(cancel_on_disconnect(), name=f"disconnect-{request_id}")
        try:
            try:
                await self.app(scope, limited_receive, send_with_id)
            except asyncio.CancelledError:
                if not client_gone or task is None or task.uncancel() > 0:
                    raise  # cancelled by the server (e.g. shutdown past its timeout), not by the disconnect
            except ClientDisconnect:
                client_gone = True  # while the body was being read
            except Exception:
                log.exception("unhandled error in %s %s", scope.get("method", ""), scope.get("path", ""))
                self.metrics.rejections.labels("internal_error").inc()
                if status_sent:
                    raise  # the response started: nothing sensible can be sent any more
                await send_internal_error(scope, send_with_id, request_id)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if client_gone:
                status = CLIENT_CLOSED_REQUEST
                self.metrics.client_disconnects.inc()
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - start
            route = route_label(scope)
            self._series(route, status).observe(elapsed)
            log.info(
                "%s %s %d %.1f ms",
                scope.get("method", ""),
                scope.get("path", ""),
                status,
                elapsed * 1000.0,
                extra={
                    "fields": {
                        "method": scope.get("method"),
                        "path": scope.get("path"),
                        "route": route,
                        "status": status,
                        "duration_ms": round(elapsed * 1000.0, 3),
                        "client": (scope.get("client") or [None])[0],
                    }
                },
            )
            request_id_var.reset(token)
