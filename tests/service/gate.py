"""A blocking wrapper around a batcher's runner, to hold a batch inside onnxruntime's executor on purpose."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.service.helpers import TestClient, app_state


class Gate:
    """Replaces ``batcher.runner``: each call signals ``entered`` and waits for ``release`` (10 s at most)."""

    def __init__(self, runner: Callable[[Any], Any]):
        self.runner = runner
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, images: Any) -> Any:
        self.calls += 1
        self.entered.set()
        self.release.wait(10)
        return self.runner(images)


def install_gate(client: TestClient, name: str) -> Gate:
    batcher = app_state(client).repository.get(name).batcher
    gate = Gate(batcher.runner)
    batcher.runner = gate
    return gate


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.002)


class Background:
    """Run ``client.post(...)`` in a thread (a TestClient, or an httpx client of a real server); ``result()``
    joins and returns the response."""

    def __init__(self, client: httpx.Client, *args: Any, **kwargs: Any):
        self.response: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(client, args, kwargs), daemon=True)
        self.thread.start()

    def _run(self, client: httpx.Client, args: Any, kwargs: Any) -> None:
        try:
            self.response = client.post(*args, **kwargs)
        except BaseException as exc:  # re-raised in the test thread
            self.error = exc

    def result(self, timeout: float = 15.0) -> Any:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError("background request did not finish")
        if self.error is not None:
            raise self.error
        return self.response
