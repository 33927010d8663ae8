"""End-to-end fixtures: the real service process (``python -m service`` = uvicorn) on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import build_or_reuse_tiny_repo


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful: uvicorn drains, the lifespan drains the batchers), SIGKILL after ``timeout``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return int(self.process.returncode)


def start_server(
    models_dir: Path, log_path: Path, *, port: int | None = None, ready_s: float = 60.0, **env: str
) -> ServerProcess:
    """Start ``python -m service`` and wait until /v2/health/ready answers 200 (``ready_s`` at most).

    ``port`` None picks a free one; a given port lets a restarted replica come back where a balancer expects
    it. The log is appended to, so a restart keeps the earlier run's lines.
    """
    port = free_port() if port is None else port
    environment = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "SERVICE_LOG_FORMAT": "json",
        "SERVICE_INTRA_OP_THREADS": "1",
        "SERVICE_DECODE_WORKERS": "2",
        "SERVICE_MAX_DELAY_MS": "2",
        **env,
    }
    repo_root = Path(__file__).resolve().parents[2]
    handle = log_path.open("ab")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--models-dir",
            str(models_dir),
        ],
        cwd=repo_root,
        env=environment,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    handle.close()
    server = ServerProcess(url=f"http://127.0.0.1:{port}", port=port, process=process, log_path=log_path)
    deadline = time.monotonic() + ready_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/v2/health/ready", timeout=1.0).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"the service did not become ready in {ready_s:.0f} s:\n{server.log()}")


@pytest.fixture(scope="session")
def e2e_repo(repo_root: Path, tmp_path_factory: pytest.TempPathFactory, gtsrb_dir: Path) -> Path:
    """<repo>/models when it has a DEFAULT (trained bundles), else the tiny test repository."""
    real = repo_root / "models"
    if (real / "DEFAULT").is_file():
        return real
    return build_or_reuse_tiny_repo(tmp_path_factory.getbasetemp(), gtsrb_dir)


#: The HTTP servers ``python -m service`` runs on (``SERVICE_SERVER``); the e2e tests run on each.
SERVERS = ("uvicorn", "granian")


@pytest.fixture(scope="session", params=SERVERS)
def server(
    request: pytest.FixtureRequest, e2e_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A real service process on each HTTP server in turn; stopped (SIGTERM) after its tests."""
    running = start_server(
        e2e_repo, tmp_path_factory.mktemp("server") / "service.log", SERVICE_SERVER=request.param
    )
    try:
        yield running
    finally:
        running.stop()
