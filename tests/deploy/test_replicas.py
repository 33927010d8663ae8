"""The replica model on loopback, for real: two service processes behind HAProxy, a restart and a rolling
model reload under load, and not one failed request.

What Kubernetes does with the Deployment in deploy/kubernetes, played here with real processes on 127.0.0.1:
HAProxy (Debian's, installed by .ci/run) checks every replica's readiness route (``/v2/health/ready``) every
250 ms, like the readiness probe, and retries a request whose connection was refused or closed unanswered on
the other replica, like a Service whose endpoint is being removed. Four clients classify through it without
pause, for a bounded number of requests and seconds, while

1. one replica gets SIGTERM (it finishes what it started, refuses new connections, exits) and starts again on
   the same port; then
2. a new version of the model is published to one replica and hot-reloaded there (the admin route) while the
   other still serves the old one, then to the other.

The counts (requests sent, 200s, errors, what the balancer retried) are printed and the errors must be 0.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.tools import require_tool
from tests.e2e.conftest import ServerProcess, free_port, start_server
from tests.service.bundle_factory import set_version
from tests.service.conftest import build_or_reuse_tiny_repo

pytestmark = pytest.mark.e2e

API_KEY = "replica-key"
CLIENTS = 4
MAX_REQUESTS = 4000  # per phase: the load stops there even if the phase is not done
PHASE_SECONDS = 300.0  # per phase: then the test fails (seconds unloaded; minutes when the cores are taken)

HAPROXY_CONFIG = """\
global
    maxconn 512
    tune.bufsize 65536
    log stdout format raw local0 info
defaults
    mode http
    log global
    option httplog
    timeout connect 1s
    timeout client 120s
    timeout server 120s
    timeout http-keep-alive 120s
    timeout check 1s
    # A request whose connection was refused, or closed without an answer (a replica shutting down closes
    # the connections it has not read a request from), or answered 503, is sent again, to the other replica
    # (redispatch). A new server connection per request (http-server-close; clients keep theirs alive):
    # on a reused one HAProxy does not retry a failed POST but closes the client's connection instead.
    option http-server-close
    # Retrying needs the whole request in HAProxy's buffer: wait for the body before picking a replica
    # (without this, a POST already being forwarded to a closing replica could not be sent again).
    option http-buffer-request
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response junk-response 503
frontend classify
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance roundrobin
    # The readiness probe: a replica takes traffic after 2 good checks, loses it after 1 bad one.
    option httpchk
    http-check send meth GET uri /v2/health/ready
    http-check expect status 200
    default-server inter 250ms fall 1 rise 2
    http-response set-header X-Replica %[srv_name]
{servers}
frontend stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats
"""


@dataclass(frozen=True)
class Outcome:
    started: float
    finished: float
    status: int | None  # None: no answer (transport error)
    replica: str | None = None
    version: str | None = None
    error: str | None = None


class BoundedLoad:
    """``CLIENTS`` threads classifying through the balancer until :meth:`stop`, ``MAX_REQUESTS`` or
    ``PHASE_SECONDS``, whichever comes first."""

    def __init__(self, url: str, upload: bytes):
        self.url, self.upload = url, upload
        self.outcomes: list[Outcome] = []
        self.sent = 0
        self.deadline = time.monotonic() + PHASE_SECONDS
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(CLIENTS)]

    def __enter__(self) -> BoundedLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
            assert not thread.is_alive(), "a client still waits for an answer after 60 s"
        return self.snapshot()

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def wait_for(self, what: str, predicate: Callable[[Outcome], bool], count: int) -> None:
        """Wait until ``count`` outcomes satisfy ``predicate`` (fail at the phase's deadline)."""
        while sum(predicate(o) for o in self.snapshot()) < count:
            if time.monotonic() > self.deadline or self._stop.is_set():
                raise AssertionError(f"no {count} answers {what} within the phase ({self.counts()})")
            time.sleep(0.02)

    def counts(self) -> dict[str, int]:
        outcomes = self.snapshot()
        return {
            "sent": len(outcomes),
            "200": sum(o.status == 200 for o in outcomes),
            "errors": sum(o.status != 200 for o in outcomes),
        }

    def _client(self) -> None:
        headers = {"content-type": "image/png"}
        with httpx.Client(base_url=self.url, timeout=120.0) as client:  # generous for a starved machine
            while not self._stop.is_set() and time.monotonic() < self.deadline:
                with self._lock:
                    if self.sent >= MAX_REQUESTS:
                        return
                    self.sent += 1
                started = time.monotonic()
                try:
                    response = client.post(
                        "/v1/classify?top_k=1&crop=none", content=self.upload, headers=headers
                    )
                    version = response.json().get("version") if response.status_code == 200 else None
                except Exception as exc:  # a failure to record (a crashed client thread would hide it)
                    outcome = Outcome(started, time.monotonic(), None, error=f"{type(exc).__name__}: {exc}")
                else:
                    outcome = Outcome(
                        started,
                        time.monotonic(),
                        response.status_code,
                        replica=response.headers.get("x-replica"),
                        version=version,
                        error=None if response.status_code == 200 else response.text[:200],
                    )
                with self._lock:
                    self.outcomes.append(outcome)


def start_replica(models_dir: Path, port: int, log_path: Path) -> ServerProcess:
    """``python -m service`` on ``port`` (tests/e2e's start_server on a given port, so that a restarted
    replica comes back where the balancer expects it); returns once it is ready."""
    return start_server(
        models_dir,
        log_path,
        port=port,
        ready_s=120.0,  # generous for a starved machine
        SERVICE_DECODE_WORKERS="1",
        SERVICE_API_KEY=API_KEY,
        SERVICE_SHUTDOWN_TIMEOUT_S="20",
    )


def in_flight(server: ServerProcess) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "stn_requests_in_flight":
                return float(sample.value)
    raise AssertionError("stn_requests_in_flight not exported")


def haproxy_stats(stats_url: str) -> dict[str, dict[str, str]]:
    """HAProxy's CSV statistics of the backend, one row per server and one for the backend itself."""
    lines = httpx.get(f"{stats_url}/stats;csv", timeout=5).text.splitlines()
    header = lines[0].lstrip("# ").split(",")
    rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
    return {row["svname"]: row for row in rows if row["pxname"] == "replicas"}


@dataclass
class Fleet:
    balancer: str
    stats: str
    replicas: dict[str, ServerProcess]
    models: dict[str, Path]
    logs: Path


@pytest.fixture
def fleet(repo_root: Path, gtsrb_dir: Path, tmp_path: Path) -> Iterator[Fleet]:
    haproxy = require_tool("haproxy", "Debian package haproxy")
    source = repo_root / "models"
    if not (source / "DEFAULT").is_file():
        source = build_or_reuse_tiny_repo(tmp_path, gtsrb_dir)
    name = (source / "DEFAULT").read_text().strip()
    replicas: dict[str, ServerProcess] = {}
    models: dict[str, Path] = {}
    process = None
    try:
        for replica in ("r1", "r2"):  # each replica has its own copy of the model repository, as a pod has
            models[replica] = tmp_path / replica / "models"
            shutil.copytree(source / name, models[replica] / name)
            (models[replica] / "DEFAULT").write_text(name + "\n")
            replicas[replica] = start_replica(models[replica], free_port(), tmp_path / f"{replica}.log")
        # The adapter rule of deploy/kubernetes/prometheus-adapter subtracts 1 from this gauge: an idle,
        # scraped replica counts the scrape itself.
        assert [in_flight(server) for server in replicas.values()] == [1.0, 1.0]
        port, stats_port = free_port(), free_port()
        servers = "\n".join(f"    server {r} 127.0.0.1:{s.port} check" for r, s in replicas.items())
        config = tmp_path / "haproxy.cfg"
        config.write_text(HAPROXY_CONFIG.format(port=port, stats_port=stats_port, servers=servers))
        check = subprocess.run([haproxy, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        log = (tmp_path / "haproxy.log").open("wb")
        process = subprocess.Popen([haproxy, "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        result = Fleet(
            f"http://127.0.0.1:{port}", f"http://127.0.0.1:{stats_port}", replicas, models, tmp_path
        )
        deadline = time.monotonic() + 60
        while {row["status"] for r, row in haproxy_stats_or_empty(result).items() if r in replicas} != {"UP"}:
            assert process.poll() is None, (tmp_path / "haproxy.log").read_text()
            assert time.monotonic() < deadline, "HAProxy did not mark both replicas UP in 60 s"
            time.sleep(0.1)
        yield result
    finally:
        if process is not None:
            process.terminate()
            process.wait(10)
        for server in replicas.values():
            server.stop()


def haproxy_stats_or_empty(fleet: Fleet) -> dict[str, dict[str, str]]:
    try:
        return haproxy_stats(fleet.stats)
    except httpx.TransportError:
        return {}


def report(title: str, outcomes: list[Outcome], fleet: Fleet) -> None:
    backend = haproxy_stats(fleet.stats)["BACKEND"]
    by_replica = Counter(o.replica for o in outcomes if o.status == 200)
    errors = Counter(o.status or o.error for o in outcomes if o.status != 200)
    print(
        f"\n{title}: sent {len(outcomes)}, 200s {sum(o.status == 200 for o in outcomes)}, errors "
        f"{sum(o.status != 200 for o in outcomes)} {dict(errors)}; answered by {dict(by_replica)}; "
        f"HAProxy retries so far {backend['wretr']}, redispatches {backend['wredis']}"
    )


def assert_no_failure(outcomes: list[Outcome]) -> None:
    failed = [o for o in outcomes if o.status != 200]
    assert not failed, f"{len(failed)} of {len(outcomes)} failed, e.g. {failed[:3]}"


def test_a_replica_restarts_under_load_without_a_failed_request(fleet: Fleet, gtsrb_dir: Path) -> None:
    upload = (gtsrb_dir / "test_originals" / "00005.png").read_bytes()
    r1 = fleet.replicas["r1"]
    with BoundedLoad(fleet.balancer, upload) as load:
        load.wait_for("from each replica", lambda o: o.replica == "r1", 20)
        load.wait_for("from each replica", lambda o: o.replica == "r2", 20)
        r1.process.send_signal(signal.SIGTERM)  # what the kubelet sends (after the preStop hook)
        stopped_at = time.monotonic()
        r1.process.wait(30)
        assert r1.process.returncode == -signal.SIGTERM, r1.log()[-2000:]
        down_for = time.monotonic() - stopped_at
        load.wait_for("from r2 while r1 is down", lambda o: o.replica == "r2" and o.started > stopped_at, 20)
        restarted = start_replica(fleet.models["r1"], r1.port, r1.log_path)
        fleet.replicas["r1"] = restarted
        back_at = time.monotonic()
        load.wait_for("from the restarted r1", lambda o: o.replica == "r1" and o.started > back_at, 10)
        outcomes = load.stop()
    report("restart of r1", outcomes, fleet)
    print(f"r1 took {down_for:.2f} s to drain and exit after SIGTERM")
    assert_no_failure(outcomes)
    assert len(outcomes) <= MAX_REQUESTS


def test_a_rolling_hot_reload_under_load_without_a_failed_request(fleet: Fleet, gtsrb_dir: Path) -> None:
    upload = (gtsrb_dir / "test_originals" / "00005.png").read_bytes()
    (name,) = [p.name for p in fleet.models["r1"].iterdir() if p.is_dir()]
    old = httpx.get(f"{fleet.replicas['r1'].url}/v1/models/{name}", timeout=10).json()["version"]
    new = f"{old}-rolled"
    reloaded_at: dict[str, float] = {}
    with BoundedLoad(fleet.balancer, upload) as load:
        load.wait_for("of the old version", lambda o: o.version == old, 20)
        for replica in ("r1", "r2"):  # one replica at a time; the other serves meanwhile
            set_version(fleet.models[replica] / name, new)
            response = httpx.post(
                f"{fleet.replicas[replica].url}/v1/models/{name}/reload",
                headers={"X-API-Key": API_KEY},
                timeout=60,
            )
            assert response.status_code == 200, response.text
            assert response.json()["previous_version"] == old and response.json()["version"] == new
            reloaded_at[replica] = time.monotonic()
            load.wait_for(
                f"of {new} from {replica}", lambda o, r=replica: o.replica == r and o.version == new, 20
            )
            if replica == "r1":  # a mixed fleet for a moment: r2 still answers with the old version
                load.wait_for(
                    "of the old version from r2 after r1's reload",
                    lambda o: o.replica == "r2" and o.version == old and o.started > reloaded_at["r1"],
                    5,
                )
        outcomes = load.stop()
    report("rolling reload r1 then r2", outcomes, fleet)
    assert_no_failure(outcomes)
    # each replica moved from old to new once: no answer started after its reload returned carries the old one
    for replica, at in reloaded_at.items():
        stale = [o for o in outcomes if o.replica == replica and o.started > at and o.version != new]
        assert not stale, stale[:3]
    assert {o.version for o in outcomes} == {old, new}
