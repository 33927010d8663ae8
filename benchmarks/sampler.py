"""Benchmark: forward+backward time and peak extra memory of torch bilinear, the linearized sampler's
PyTorch path and its fused kernel (C++ on CPU, Triton on CUDA), and the straightforward (materialized)
formulation (:mod:`training.sampling.reference`).

Run from the repository root::

    .venv/bin/python -m benchmarks.sampler                 # all threads torch uses by default
    .venv/bin/python -m benchmarks.sampler --threads 1 --repeats 30 --clock cpu
    python3 -m benchmarks.sampler --device cuda --repeats 50 --out sampler_cuda.md

Timing: each repeat runs every method once, in rotating order, on the same tensors (a fresh ``.grad``
each time); the table reports the median over repeats, in milliseconds, of one forward plus one backward with
a random ``grad_output`` (gradients w.r.t. both input and grid). ``--clock wall`` (default) times with
``time.perf_counter``; ``--clock cpu`` with ``time.thread_time``, the CPU time of the calling thread, which
leaves out the time the thread waited for a core on a loaded machine (only meaningful with ``--threads 1``
on CPU). Memory: peak bytes allocated above what was live before the call, over one forward+backward (CPU:
from the profiler's allocation events; CUDA: ``torch.cuda.max_memory_allocated``). "fused extra vs bil" is
the fused kernel's peak minus bilinear's; the target is at most input + output bytes.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from training.sampling import cpu_kernel, grid_sample, triton_kernel
from training.sampling.reference import reference_linearized_grid_sample


@dataclass(frozen=True)
class Workload:
    """One benchmark case: N images of C channels, H_in x W_in, sampled to H_out x W_out."""

    n: int
    c: int
    size_in: int
    size_out: int

    @property
    def name(self) -> str:
        return f"N={self.n} C={self.c} {self.size_in}->{self.size_out}"


WORKLOADS: tuple[Workload, ...] = (
    Workload(100, 3, 50, 36),
    Workload(100, 3, 50, 18),
    Workload(100, 3, 50, 9),
    Workload(100, 3, 50, 5),
    Workload(32, 32, 64, 32),
)

QUICK_WORKLOADS: tuple[Workload, ...] = (Workload(4, 3, 20, 9),)
"""``--quick``: one tiny workload (the dry run of benchmarks/gpu_check.sh)."""

Method = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def methods_for(device: torch.device, straightforward: bool = True) -> dict[str, Method]:
    """The compared methods; "fused" is the C++ kernel on CPU and the Triton kernel on CUDA (absent where
    it is unavailable); "straightforward" unless ``straightforward=False``."""
    methods: dict[str, Method] = {
        "bilinear": lambda x, g: F.grid_sample(x, g, mode="bilinear", align_corners=False),
        "torch path": lambda x, g: grid_sample(x, g, mode="linearized", backend="torch"),
    }
    fused = "triton" if device.type == "cuda" else "cpu"
    probe = torch.empty(0, device=device)
    if cpu_kernel.supports(probe) if fused == "cpu" else triton_kernel.supports(probe):
        methods["fused"] = lambda x, g: grid_sample(x, g, mode="linearized", backend=fused)
    if straightforward:
        methods["straightforward"] = lambda x, g: reference_linearized_grid_sample(x, g)
    return methods


def make_inputs(work: Workload, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Input (N, C, H_in, W_in), a grid of random similarity warps of the central crop (N, H_out, W_out, 2),
    normalized, align_corners=False, and a grad_output (N, C, H_out, W_out)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(work.n, work.c, work.size_in, work.size_in, generator=gen)
    angle = (torch.rand(work.n, generator=gen) - 0.5) * 0.5
    scale = 0.72 * (1.0 + (torch.rand(work.n, generator=gen) - 0.5) * 0.2)
    shift = (torch.rand(work.n, 2, generator=gen) - 0.5) * 0.2
    theta = torch.zeros(work.n, 2, 3)
    theta[:, 0, 0] = scale * torch.cos(angle)
    theta[:, 0, 1] = -scale * torch.sin(angle)
    theta[:, 1, 0] = scale * torch.sin(angle)
    theta[:, 1, 1] = scale * torch.cos(angle)
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, [work.n, work.c, work.size_out, work.size_out], align_corners=False)
    grad = torch.randn(work.n, work.c, work.size_out, work.size_out, generator=gen)
    return x.to(device), grid.to(device), grad.to(device)


def step(method: Method, x: torch.Tensor, grid: torch.Tensor, grad: torch.Tensor) -> None:
    """One forward and backward, gradients w.r.t. input and grid."""
    x.grad = None
    grid.grad = None
    method(x, grid).backward(grad)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_methods(
    work: Workload,
    device: torch.device,
    repeats: int,
    methods: dict[str, Method],
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Median milliseconds of forward+backward per method (interleaved repeats)."""
    x, grid, grad = make_inputs(work, device)
    x.requires_grad_(True)
    grid.requires_grad_(True)
    names = list(methods)
    for name in names:  # warm-up
        for _ in range(2):
            step(methods[name], x, grid, grad)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for i in range(len(names)):
            name = names[(i + r) % len(names)]
            sync(device)
            start = clock()
            step(methods[name], x, grid, grad)
            sync(device)
            times[name].append((clock() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def peak_memory(work: Workload, device: torch.device, method: Method) -> int:
    """Peak bytes allocated above the live memory before one forward+backward."""
    x, grid, grad = make_inputs(work, device)
    x.requires_grad_(True)
    grid.requires_grad_(True)
    step(method, x, grid, grad)
    x.grad = None
    grid.grad = None
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step(method, x, grid, grad)
        sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(method, x, grid, grad)
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
        key=lambda e: e.start_ns(),
    )
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak


def mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:.2f}"


def run(
    device: torch.device,
    repeats: int,
    skip_memory: bool,
    workloads: tuple[Workload, ...] = WORKLOADS,
    clock: Callable[[], float] = time.perf_counter,
    straightforward: bool = True,
) -> list[str]:
    """Benchmark every workload on ``device``; returns the markdown table's lines."""
    methods = methods_for(device, straightforward)
    names = list(methods)
    ratios = [name for name in names if name not in ("bilinear", "straightforward")]
    lines = [
        "| workload | "
        + " | ".join(f"{name} ms" for name in names)
        + " | "
        + " | ".join(f"{name} / bil" for name in ratios)
        + " | peak MiB "
        + " / ".join(names)
        + " | fused extra vs bil MiB | input+output MiB |",
        "|---|" + "---:|" * (len(names) + len(ratios)) + "---|---:|---:|",
    ]
    print("\n".join(lines), flush=True)
    for work in workloads:
        ms = time_methods(work, device, repeats, methods, clock)
        elem = 4
        budget = elem * work.n * work.c * (work.size_in**2 + work.size_out**2)
        if skip_memory:
            mem_cells = "-", "-"
        else:
            peaks = {name: peak_memory(work, device, method) for name, method in methods.items()}
            fused = "fused" if "fused" in peaks else "torch path"
            mem_cells = (
                " / ".join(mib(peaks[name]) for name in names),
                mib(peaks[fused] - peaks["bilinear"]),
            )
        lines.append(
            f"| {work.name} | "
            + " | ".join(f"{ms[name]:.2f}" for name in names)
            + " | "
            + " | ".join(f"{ms[name] / ms['bilinear']:.2f}" for name in ratios)
            + f" | {mem_cells[0]} | {mem_cells[1]} | {mib(budget)} |"
        )
        print(lines[-1], flush=True)
    return lines


def median_ms(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median milliseconds of ``fn()`` after two warm-up calls."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _draws(z: torch.Tensor) -> None:
    for _ in range(7):
        z.normal_()


def _forwards(x: torch.Tensor, grid: torch.Tensor) -> None:
    for _ in range(7):
        torch.grid_sampler(x, grid, 0, 0, False)


def _input_backward(x: torch.Tensor, grid: torch.Tensor, grad: torch.Tensor) -> None:
    torch.ops.aten.grid_sampler_2d_backward(grad, x, grid, 0, 0, False, [True, False])


def breakdown(device: torch.device, repeats: int) -> None:
    """Print the unavoidable parts of an unfused linearized step: K - 1 = 7 offset draws, 7 bilinear forward
    samplings and the input-gradient backward, against torch bilinear's forward+backward."""
    print(
        "| workload | bilinear fwd+bwd ms | 7 x randn ms | 7 x grid_sample fwd ms | input-grad bwd ms "
        "| sum / bilinear |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for work in WORKLOADS:
        x, grid, grad = make_inputs(work, device)
        z = torch.empty(2, work.n, 1, work.size_out, work.size_out, device=device)
        xr, gr = x.clone().requires_grad_(True), grid.clone().requires_grad_(True)
        bil = median_ms(partial(step, methods_for(device)["bilinear"], xr, gr, grad), device, repeats)
        rng = median_ms(partial(_draws, z), device, repeats)
        fwd = median_ms(partial(_forwards, x, grid), device, repeats)
        bwd = median_ms(partial(_input_backward, x, grid, grad), device, repeats)
        floor = (rng + fwd + bwd) / bil
        print(f"| {work.name} | {bil:.2f} | {rng:.2f} | {fwd:.2f} | {bwd:.2f} | {floor:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cpu, and cuda when available)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall", help="wall: perf_counter; cpu: thread_time"
    )
    parser.add_argument("--quick", action="store_true", help="one tiny workload (a smoke test)")
    parser.add_argument(
        "--no-straightforward", action="store_true", help="leave out the (slow) materialized formulation"
    )
    parser.add_argument("--out", default=None, help="also write the tables (markdown) to this file")
    parser.add_argument(
        "--breakdown", action="store_true", help="print the cost floor of an unfused implementation instead"
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    devices = [torch.device(args.device)] if args.device else [torch.device("cpu")]
    if args.device is None and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    workloads = QUICK_WORKLOADS if args.quick else WORKLOADS
    report: list[str] = []
    for device in devices:
        label = (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else f"{torch.get_num_threads()} threads"
        )
        title = (
            f"## {device.type} ({label}), torch {torch.__version__}, median of {args.repeats} repeats, "
            f"{args.clock} clock"
        )
        print(f"\n{title}\n")
        if args.breakdown:
            breakdown(device, args.repeats)
        else:
            report += [
                "",
                title,
                "",
                *run(device, args.repeats, args.skip_memory, workloads, clock, not args.no_straightforward),
            ]
    if args.out:
        Path(args.out).write_text("\n".join(report) + "\n")


if __name__ == "__main__":
    main()
