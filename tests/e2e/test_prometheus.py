"""A real Prometheus server scrapes the real service; its HTTP API returns the service's request counter."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.conftest import ServerProcess, free_port
from tests.service.helpers import missing_system_package

pytestmark = pytest.mark.e2e

PROMETHEUS = shutil.which("prometheus")


@pytest.fixture
def prometheus(server: ServerProcess, tmp_path: Path) -> Iterator[str]:
    if PROMETHEUS is None:
        missing_system_package("the prometheus binary is not installed (Debian package prometheus)")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {
                "job_name": "stn-e2e",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [f"127.0.0.1:{server.port}"]}],
            }
        ],
    }
    config_path = tmp_path / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"prometheus exited: {(tmp_path / 'prometheus.log').read_text()}")
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"prometheus not ready in 30 s: {(tmp_path / 'prometheus.log').read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def query(url: str, promql: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def test_prometheus_scrapes_the_request_counter(
    server: ServerProcess, prometheus: str, gtsrb_dir: Path
) -> None:
    image = (gtsrb_dir / "test_originals" / "00042.png").read_bytes()
    for _ in range(3):
        response = httpx.post(
            f"{server.url}/v1/classify", content=image, headers={"content-type": "image/png"}
        )
        assert response.status_code == 200
    own = httpx.get(f"{server.url}/metrics").text
    line = next(
        x for x in own.splitlines() if x.startswith('stn_requests_total{route="/v1/classify",status="200"}')
    )
    target = float(line.rsplit(" ", 1)[1])
    assert target >= 3
    promql = 'sum(stn_requests_total{job="stn-e2e",route="/v1/classify",status="200"})'
    deadline = time.monotonic() + 30
    value = None
    while time.monotonic() < deadline:
        result = query(prometheus, promql)
        value = float(result[0]["value"][1]) if result else None
        if value is not None and value >= target:
            break
        time.sleep(0.25)
    assert value == target, f"Prometheus saw {value}, the service counted {target}"
    up = query(prometheus, 'up{job="stn-e2e"}')
    assert up and up[0]["value"][1] == "1"
    info = query(prometheus, 'stn_model_info{job="stn-e2e"}')
    assert info and info[0]["metric"]["model"]
