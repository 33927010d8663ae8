"""A direct dispatch of the classify routes, past Starlette's router and FastAPI's request handling.

The classify routes are declared as FastAPI routes (their OpenAPI schema, their place in the router), and
their endpoints take only the ``Request``: they parse their own options (``service.routes.classify``). On a
small image the stack between the request middleware and such an endpoint (exception middleware, exit
stacks, the router's matching, FastAPI's request handler) costs about as much as decoding the image, so
:class:`ClassifyFastPath` sends a ``POST`` on those paths straight to the endpoint and maps its errors with
the application's own exception handlers, as that stack would. Everything else (other methods and paths,
trailing slashes) goes down the normal stack. docs/benchmarks.md has the measurement.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from re import Pattern
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Any], Response | Awaitable[Response]]


@dataclass(frozen=True)
class DirectRoute:
    """A route served directly: its path template (Starlette syntax, ``{name}`` matches one segment) and an
    endpoint taking only the request. ``scope["route"]`` is set to it, so ``path`` is the route label of
    the metrics and the access log, as for the router's routes."""

    path: str
    endpoint: Endpoint
    regex: Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        regex, _, convertors = compile_path(self.path)
        if any(type(c).__name__ != "StringConvertor" for c in convertors.values()):
            raise ValueError(f"direct route {self.path!r}: only {{name}} (string) parameters are supported")
        object.__setattr__(self, "regex", regex)


class ClassifyFastPath:
    """ASGI middleware: ``POST`` requests on a direct route's path go straight to its endpoint.

    Args:
        app: the rest of the stack (everything else).
        application: the FastAPI application, for its exception handlers.
        routes: the routes served directly.
    """

    def __init__(self, app: ASGIApp, *, application: FastAPI, routes: tuple[DirectRoute, ...]):
        self.app = app
        self.application = application
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            for route in self.routes:
                match = route.regex.match(path)
                if match is not None:
                    scope["route"] = route
                    scope["path_params"] = match.groupdict()
                    await self._serve(route.endpoint, scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _serve(self, endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise  # the request middleware answers 500 with the request id
            answer = handler(request, exc)
            response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> Handler | None:
        """The application's exception handler for ``exc``'s class or its nearest base (as Starlette looks
        it up); None when there is none."""
        handlers = self.application.exception_handlers
        for cls in type(exc).__mro__:
            if cls in handlers:
                return handlers[cls]
        return None
