"""The command lines of the two servers under test."""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks.load.peer_env import PeerEnv
from benchmarks.load.servers import LOOPBACK, ServerCommand
from benchmarks.load.settings import REPO, BenchConfig

PEER_DIR = REPO / "benchmarks" / "peer_bentoml"


def service_argv(port: int, models_dir: Path, server: str | None) -> list[str]:
    """``python -m service`` on loopback at ``port`` serving ``models_dir``; ``server`` None: the service's
    default HTTP server (SERVICE_SERVER), else ``--server server``."""
    argv = [sys.executable, "-m", "service", "--host", LOOPBACK, "--port", str(port)]
    argv += ["--models-dir", str(models_dir)]
    return argv if server is None else [*argv, "--server", server]


def ours(config: BenchConfig, batching: str, port: int) -> ServerCommand:
    """``python -m service`` on loopback; batching off is ``SERVICE_MAX_BATCH_SIZE=1`` (and no delay)."""
    on = batching == "on"
    env = {
        "SERVICE_DEFAULT_MODEL": config.model,
        "SERVICE_EXECUTION_PROVIDER": "cpu",
        "SERVICE_MAX_BATCH_SIZE": str(config.max_batch_size if on else 1),
        "SERVICE_MAX_DELAY_MS": str(config.max_delay_ms if on else 0.0),
        "SERVICE_QUEUE_SIZE": str(config.queue_size),
        "SERVICE_INTRA_OP_THREADS": str(config.intra_op_threads),
        "SERVICE_INFERENCE_WORKERS": str(config.inference_workers),
        "SERVICE_REQUEST_TIMEOUT_S": str(config.timeout_s),
    }
    argv = service_argv(port, config.models_dir, None if config.server == "default" else config.server)
    return ServerCommand(
        name=f"ours-batching-{batching}",
        argv=argv,
        env=env,
        cwd=REPO,
        port=port,
        ready_path="/v2/health/ready",
        batch_metric="stn_batch_size",
    )


def ours_path(crop: str) -> str:
    """Our classify route with the crop option: ``default`` sends no query (the service's default)."""
    return "/v1/classify" if crop == "default" else f"/v1/classify?crop={crop}"


def peer(config: BenchConfig, env: PeerEnv, port: int) -> ServerCommand:
    """``bentoml serve`` of benchmarks/peer_bentoml/service.py from the peer virtualenv, one worker."""
    args = {
        "model_path": str(config.onnx_path.resolve()),
        "intra_op_threads": config.intra_op_threads,
        "max_batch_size": config.max_batch_size,
        "max_latency_ms": config.peer_max_latency_ms,
        "workers": 1,
    }
    argv = [str(env.bentoml), "serve", "service:PeerClassifier", "--working-dir", str(PEER_DIR)]
    argv += ["--host", LOOPBACK, "--port", str(port)]
    for key, value in args.items():
        argv += ["--arg", f"{key}={value}"]
    return ServerCommand(
        name="peer-bentoml",
        argv=argv,
        env={
            "BENTOML_HOME": str(env.venv.parent / "bentoml-home"),
            "BENTOML_DO_NOT_TRACK": "true",
        },
        cwd=PEER_DIR,
        port=port,
        ready_path="/readyz",
        batch_metric="bentoml_service_adaptive_batch_size",
    )


def peer_path(batching: str) -> str:
    """The peer's batchable route, or its one-image route with batching off."""
    return "/classify" if batching == "on" else "/classify_single"
