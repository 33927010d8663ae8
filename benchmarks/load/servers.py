"""Start, probe and stop the servers under test (our service, the BentoML peer) as pinned subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from benchmarks.load.procfs import TreeStats, tree_stats

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ServerCommand:
    """How to start one server.

    Attributes:
        name: label in the report and the log file name.
        argv: the command line.
        env: variables added to this process's environment.
        ready_path: GET path that answers 200 once the server can serve (``/v2/health/ready``, ``/readyz``).
        batch_metric: name of the Prometheus histogram of batch sizes on ``/metrics`` (``_sum``/``_count``).
    """

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    port: int
    ready_path: str
    batch_metric: str
    host: str = LOOPBACK


def pinned(argv: list[str], cores: list[int] | None) -> list[str]:
    """``argv`` run under ``taskset -c CORES`` (the process and everything it forks stay on those cores);
    unchanged without cores or without taskset (then the caller pins the started process)."""
    if not cores or not shutil.which("taskset"):
        return argv
    return ["taskset", "-c", ",".join(map(str, cores)), *argv]


def free_port() -> int:
    """A TCP port on loopback that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def http_get(host: str, port: int, path: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    """(status, body) of ``GET http://host:port/path``; status 0 when the connection fails."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout_s) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


class ServerProcess:
    """A server started in its own session (process group), pinned to ``cores``, logging to ``log_path``.

    Use as a context manager: entering starts it and waits until ``ready_path`` answers 200; leaving sends
    SIGTERM to its process group (the server and any workers it forked) and SIGKILL after ``stop_timeout_s``.
    """

    def __init__(
        self,
        command: ServerCommand,
        cores: list[int] | None,
        log_path: Path,
        ready_timeout_s: float = 120.0,
        stop_timeout_s: float = 30.0,
    ):
        self.command = command
        self.cores = cores
        self.log_path = log_path
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """Process id of the server's root process."""
        if self._proc is None:
            raise RuntimeError(f"{self.command.name} is not running")
        return self._proc.pid

    def __enter__(self) -> ServerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                pinned(self.command.argv, self.cores),
                cwd=self.command.cwd,
                env={**os.environ, **self.command.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if self.cores and not shutil.which("taskset"):
            os.sched_setaffinity(self._proc.pid, self.cores)  # before it starts threads, in practice
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(
                    f"{self.command.name} exited with {self._proc.returncode} before it was ready; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            status, _ = http_get(self.command.host, self.command.port, self.command.ready_path, 2.0)
            if status == 200:
                return
            time.sleep(0.2)
        raise TimeoutError(
            f"{self.command.name} not ready after {self.ready_timeout_s} s; log {self.log_path}"
        )

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stats(self) -> TreeStats:
        """RSS and CPU of the server's process tree now."""
        return tree_stats(self.pid)

    def alive(self) -> bool:
        """Whether the root process is still running."""
        return self._proc is not None and self._proc.poll() is None

    def batch_histogram(self) -> tuple[float, float] | None:
        """(sum, count) of the server's batch-size histogram on /metrics, over all label sets; None when the
        metric is absent or /metrics does not answer."""
        status, body = http_get(self.command.host, self.command.port, "/metrics")
        if status != 200:
            return None
        total = {"_sum": 0.0, "_count": 0.0}
        seen = False
        for line in body.decode(errors="replace").splitlines():
            if not line.startswith(self.command.batch_metric):
                continue
            name = line.split("{", 1)[0].split(" ", 1)[0]
            suffix = name[len(self.command.batch_metric) :]
            if suffix in total:
                total[suffix] += float(line.rsplit(" ", 1)[1])
                seen = True
        return (total["_sum"], total["_count"]) if seen else None

    def stop(self) -> None:
        """SIGTERM to the server's process group, then SIGKILL after ``stop_timeout_s``."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # workers left behind by the root process
            os.killpg(proc.pid, signal.SIGKILL)


def classify_once(host: str, port: int, request: bytes, timeout_s: float = 30.0) -> tuple[int, Any]:
    """Send one prebuilt request on a fresh connection; (status, decoded JSON or None)."""
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None
