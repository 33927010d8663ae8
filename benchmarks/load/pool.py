"""A pool of load-generator processes that stays up for the whole benchmark.

Each process is spawned once (``spawn``: the parent has onnxruntime threads, so no ``fork``), pins itself to
the client cores, receives the images once, and then runs one :class:`~benchmarks.load.config.WorkerJob` per
phase. The parent starts every phase at a common ``time.monotonic()`` instant slightly in the future, so all
processes follow one timetable.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import TracebackType

import numpy as np

from benchmarks.load.config import PhaseSpec, WorkerJob
from benchmarks.load.generator import Samples, worker_main

#: Seconds between handing out a phase and its start, so every worker is waiting when it begins.
START_MARGIN_S = 0.3


@dataclass(frozen=True)
class PhaseRun:
    """A finished phase: the merged samples and the common start instant (monotonic seconds)."""

    spec: PhaseSpec
    samples: Samples
    t_start: float

    @property
    def t_measure(self) -> float:
        """Start of the measured window (monotonic seconds)."""
        return self.t_start + self.spec.warmup_s


class ClientPool:
    """``processes`` load-generator processes, each pinned to ``cores`` (all of them share those cores)."""

    def __init__(self, processes: int, cores: list[int] | None, images: list[tuple[str, bytes]]):
        if processes < 1:
            raise ValueError(f"need at least one load-generator process, got {processes}")
        self.processes = processes
        self.cores = cores
        self._images = images
        self._pipes: list[Pipe] = []
        self._procs: list[BaseProcess] = []

    def __enter__(self) -> ClientPool:
        context = multiprocessing.get_context("spawn")
        for index in range(self.processes):
            parent, child = context.Pipe()
            proc = context.Process(
                target=worker_main,
                args=(child, self.cores, self._images),
                name=f"load-generator-{index}",
                daemon=True,
            )
            proc.start()
            child.close()
            self._pipes.append(parent)
            self._procs.append(proc)
        for pipe in self._pipes:
            if pipe.recv() != "ready":
                raise RuntimeError("a load-generator process did not start")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for pipe in self._pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        self._pipes, self._procs = [], []

    def run(
        self,
        spec: PhaseSpec,
        on_tick: Callable[[float], None] | None = None,
        tick_s: float = 1.0,
    ) -> PhaseRun:
        """Run one phase on every process and merge their samples.

        Args:
            on_tick: called with the current monotonic time about every ``tick_s`` seconds while the phase
                runs (the parent samples server RSS and CPU with it), and once at the measured window's start.
        """
        workers = max(1, min(self.processes, spec.connections))
        t_start = time.monotonic() + START_MARGIN_S
        jobs = [
            WorkerJob(
                spec=spec,
                index=i,
                workers=workers,
                connections=_share(spec.connections, workers, i),
                max_requests=_share(spec.max_requests, workers, i),
                t_start=t_start,
            )
            for i in range(workers)
        ]
        for pipe, job in zip(self._pipes, jobs, strict=False):
            pipe.send(job)
        pending = {id(pipe): i for i, pipe in enumerate(self._pipes[:workers])}
        results: dict[int, Samples] = {}
        next_tick = t_start + spec.warmup_s
        while len(results) < workers:
            now = time.monotonic()
            if on_tick is not None and now >= next_tick:
                on_tick(now)
                next_tick = now + tick_s
            timeout = max(0.0, next_tick - time.monotonic()) if on_tick is not None else tick_s
            waiting = [pipe for pipe in self._pipes[:workers] if pending[id(pipe)] not in results]
            for ready in wait(waiting, timeout):
                if isinstance(ready, Pipe):
                    results[pending[id(ready)]] = ready.recv()
        return PhaseRun(spec=spec, samples=_merge([results[i] for i in range(workers)]), t_start=t_start)


def _share(total: int, parts: int, index: int) -> int:
    """``total`` split into ``parts`` near-equal integer shares (at least 1 each)."""
    return max(1, total // parts + (1 if index < total % parts else 0))


def _merge(parts: list[Samples]) -> Samples:
    """All workers' samples in due-time order; CPU seconds add up, wall seconds take the longest."""
    due = np.concatenate([p.due for p in parts])
    order = np.argsort(due, kind="stable")
    return Samples(
        due=due[order],
        lag=np.concatenate([p.lag for p in parts])[order],
        latency=np.concatenate([p.latency for p in parts])[order],
        status=np.concatenate([p.status for p in parts])[order],
        unsent=sum(p.unsent for p in parts),
        cpu_s=sum(p.cpu_s for p in parts),
        wall_s=max(p.wall_s for p in parts),
    )
