"""Multi-node training as deploy/training/pytorchjob.yaml launches it, on loopback: two torchrun agents (two
"nodes" of one process each) meet at a c10d rendezvous endpoint and run deploy/training/run-train.sh, which
resumes from the run's checkpoint when there is one.

What this shows on CPU with gloo (NCCL and GPUs need a real cluster): the PyTorchJob's own arguments parse;
both ranks load the data and train (the images per step count both; that DDP keeps their parameters equal is
tests/training/test_distributed.py); only rank 0 writes the run folder; a second launch of the same command
resumes the first run's checkpoint under DDP and continues its steps and history.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.deploy.manifests import DEPLOY, REPO_ROOT, load_documents
from tests.e2e.conftest import free_port

SCRIPT = "deploy/training/run-train.sh"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
# run-train.sh calls `python`: this interpreter's, as in the image
PATH = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


def job_script_args() -> list[str]:
    """The arguments the PyTorchJob passes to run-train.sh (after ``sh deploy/training/run-train.sh``)."""
    (job,) = load_documents(DEPLOY / "training" / "pytorchjob.yaml")
    (main,) = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"]
    args = main["args"]
    return list(args[args.index(SCRIPT) + 1 :])


def print_config(out: Path, args: list[str]) -> dict[str, Any]:
    result = subprocess.run(
        ["sh", SCRIPT, *args, "--print-config"],
        cwd=REPO_ROOT,
        env={**os.environ, "PATH": PATH, "TRAIN_OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_the_job_arguments_parse_and_resume_only_when_a_checkpoint_exists(tmp_path: Path) -> None:
    args = job_script_args()
    fresh = print_config(tmp_path / "run", args)
    assert fresh["run"]["out"] == str(tmp_path / "run") and fresh["run"]["resume"] is None
    assert fresh["run"]["device"] == "cuda" and fresh["data"]["cache_dir"] == "/cache"
    assert fresh["model"]["model_type"] == "stn" and fresh["model"]["arch"] == "large"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"")
    resumed = print_config(tmp_path / "run", args)
    assert resumed["run"]["resume"] == str(tmp_path / "run" / "checkpoint.pt")
    without = subprocess.run(["sh", SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert without.returncode != 0 and "TRAIN_OUT" in without.stderr


def launch_two_nodes(out: Path, data_dir: Path, epochs: int, logs: Path, rendezvous: str) -> None:
    """torchrun once per "node" on 127.0.0.1: ``static``, the PyTorchJob's form (a master address and
    port, and each node's rank), or ``c10d``, the plain multi-node form of docs/deploy.md (an endpoint)."""
    port = free_port()
    if rendezvous == "static":
        launch = ["--master-addr=127.0.0.1", f"--master-port={port}"]
    else:
        launch = ["--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=stn-test"]
    train_args = [
        "--model", "stn", "--arch", "paper", "--sampler", "bilinear", "--warp", "affine",
        "--epochs", str(epochs), "--batch-size", "16", "--limit-train", "128", "--lr", "0.001",
        "--device", "cpu", "--threads", "1", "--data-dir", str(data_dir),
        "--set", "data.val_fraction=0.0", "--set", f"data.cache_dir={logs / 'cache'}",
        "--no-plots", "--no-final-eval",
    ]  # fmt: skip
    env = {**os.environ, "PATH": PATH, "TRAIN_OUT": str(out), "OMP_NUM_THREADS": "1"}
    agents = []
    for node_rank in (0, 1):
        log = (logs / f"node{node_rank}.log").open("wb")
        agents.append(
            subprocess.Popen(
                [
                    *TORCHRUN,
                    "--nnodes=2",
                    "--nproc-per-node=1",
                    *([*launch, f"--node-rank={node_rank}"] if rendezvous == "static" else launch),
                    "--max-restarts=0",
                    "--no-python",
                    "sh",
                    SCRIPT,
                    *train_args,
                ],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        log.close()
    try:
        for node_rank, agent in enumerate(agents):
            code = agent.wait(600)  # generous: on a loaded 2-core machine one launch took 4 minutes
            assert code == 0, (logs / f"node{node_rank}.log").read_text()[-4000:]
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
                agent.wait(10)


@pytest.mark.slow
def test_two_nodes_train_then_resume_under_ddp(gtsrb_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs" / "ddp"
    launch_two_nodes(out, gtsrb_dir, epochs=1, logs=tmp_path, rendezvous="static")
    first = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps_per_epoch = 128 // 2 // 16  # rows split over 2 ranks, 16 per step
    assert [r["step"] for r in first] == [steps_per_epoch]
    assert first[0]["world_size"] == 2 and first[0]["images"] == steps_per_epoch * 2 * 16
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and state["step"] == steps_per_epoch

    # the same command again with one more epoch: run-train.sh finds the checkpoint and every rank resumes
    launch_two_nodes(out, gtsrb_dir, epochs=2, logs=tmp_path, rendezvous="c10d")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [steps_per_epoch, 2 * steps_per_epoch]
    assert [r["epoch"] for r in records] == [1, 2]
    final = torch.load(out / "model.pt", weights_only=True)
    assert final["step"] == 2 * steps_per_epoch and final["world_size"] == 2
    assert [h["step"] for h in final["history"]] == [steps_per_epoch, 2 * steps_per_epoch]
    log0, log1 = (tmp_path / "node0.log").read_text(), (tmp_path / "node1.log").read_text()
    assert "resumed from" in log0 + log1
    # only rank 0 writes: the run folder holds its files and nothing else, and no rank wrote elsewhere
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.pt",
        "config.json",
        "metrics.jsonl",
        "model.pt",
    ]
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["ddp"]
