"""Two gloo processes on CPU run the real training loop under DDP; their parameters stay in sync."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from training.config import DataConfig, OptimConfig, RunConfig, TrainConfig
from training.distributed import DistContext, env_requests_distributed, setup, unwrap_model, wrap_model
from training.models import ModelConfig, build_model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(data_dir: str, out: str) -> TrainConfig:
    return TrainConfig(
        model=ModelConfig(model_type="stn", arch="paper", sampler="bilinear", warp_type="affine"),
        data=DataConfig(data_dir=data_dir, limit_train=128, val_fraction=0.0, cache_dir=None),
        optim=OptimConfig(epochs=1, batch_size=16, lr=1e-3),
        run=RunConfig(out=out, device="cpu", threads=1, max_steps=2, final_eval=False, plots=False),
    )


def _worker(rank: int, world_size: int, port: int, data_dir: str, out: str) -> None:
    """What torchrun would start: the environment variables, then the ordinary training entry point."""
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "LOCAL_RANK": str(rank),
        }
    )
    from training.train import train

    result = train(_config(data_dir, out))
    assert result.model is not None
    torch.save({k: v.detach() for k, v in result.model.state_dict().items()}, Path(out) / f"rank{rank}.pt")


def test_two_gloo_processes_stay_in_sync(gtsrb_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    mp.spawn(_worker, args=(2, _free_port(), str(gtsrb_dir), str(out)), nprocs=2, join=True)
    r0 = torch.load(out / "rank0.pt", weights_only=True)
    r1 = torch.load(out / "rank1.pt", weights_only=True)
    # ranks seed their own initial weights differently: DDP broadcast rank 0's, and the all-reduced steps kept
    # them equal
    for key in r0:
        torch.testing.assert_close(r0[key], r1[key], rtol=0, atol=0, msg=key)
    torch.manual_seed(0)
    initial = build_model(_config(str(gtsrb_dir), str(out)).model).state_dict()
    assert any(not torch.equal(initial[k], r0[k]) for k in r0), "the step changed nothing"
    assert (out / "model.pt").is_file() and not (out / "rank1" / "model.pt").exists()
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert record["world_size"] == 2 and record["images"] == 2 * 2 * 16  # 2 steps x 2 ranks x 16


def test_single_process_needs_no_process_group(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert not env_requests_distributed()
    ctx = setup("cpu")
    assert ctx == DistContext() and ctx.is_main and not ctx.enabled
    model = build_model(ModelConfig(arch="paper"))
    assert wrap_model(model, ctx, torch.device("cpu")) is model
    assert unwrap_model(model) is model
