"""torch.distributed support: ``torchrun`` (or any launcher setting RANK / WORLD_SIZE / MASTER_ADDR) and DDP.

NCCL on GPUs, gloo on CPUs. Without those environment variables everything runs as a single process (rank 0
of 1) and nothing here touches torch.distributed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    """Where this process stands.

    Attributes:
        rank: global rank (0 in a single process).
        local_rank: rank on this machine (selects the GPU).
        world_size: number of processes.
        backend: ``nccl``, ``gloo`` or None (not distributed).
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        """True when more than one process takes part (or a process group was started)."""
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, writes checkpoints, plots and metrics."""
        return self.rank == 0


def env_requests_distributed() -> bool:
    """True when a launcher (torchrun) set WORLD_SIZE and RANK."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def setup(device_type: str) -> DistContext:
    """Start the process group when launched by torchrun; choose NCCL for ``cuda`` and gloo otherwise.

    Args:
        device_type: ``cuda`` or ``cpu``; on CUDA the process uses GPU ``LOCAL_RANK``.
    """
    if dist.is_available() and dist.is_initialized():
        return DistContext(
            dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)), dist.get_world_size(), dist.get_backend()
        )
    if not env_requests_distributed():
        return DistContext()
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistContext(rank, local_rank, world_size, backend)


def cleanup(ctx: DistContext) -> None:
    """Destroy the process group that :func:`setup` started."""
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """DDP-wrap ``model`` when distributed (device_ids set on CUDA), else return it unchanged."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        return DistributedDataParallel(model, device_ids=[device.index])
    return DistributedDataParallel(model)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or ``model`` itself)."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, nn.Module) else model


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum a tensor over all processes (identity when not distributed).

    NCCL reduces CUDA tensors only, so under NCCL a CPU tensor travels through this rank's GPU and comes back
    on the CPU; the result has ``values``' device and dtype.
    """
    if not ctx.enabled:
        return values
    work = values.detach().clone()
    if ctx.backend == "nccl" and work.device.type != "cuda":
        work = work.to(torch.device("cuda", ctx.local_rank))
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return work.to(values.device)


def barrier(ctx: DistContext) -> None:
    """Wait for every process (no-op when not distributed)."""
    if ctx.enabled:
        dist.barrier()
