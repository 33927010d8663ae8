"""The fused C++ CPU kernel: built on first use into a cache outside the tree; clean fallback to the PyTorch
path where it cannot build. (Its numerical equality with the PyTorch path and the reference is checked in
test_linearized.py, which runs both backends.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training.sampling import cpu_kernel, grid_sample

ROOT = Path(__file__).resolve().parents[3]

PROBE = """
import torch
from training.sampling import cpu_kernel, grid_sample
from training.sampling.linearized import select_backend
from training.sampling.options import SamplerOptions
x, grid = torch.rand(1, 2, 8, 8), torch.zeros(1, 3, 3, 2)
out = grid_sample(x, grid, "linearized")
print(cpu_kernel.available(), select_backend(SamplerOptions(), x), tuple(out.shape), "|", cpu_kernel.status())
"""


def _probe(env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == ""  # nothing warned or printed on the way
    return result.stdout.strip()


def test_without_a_compiler_the_pytorch_path_runs(tmp_path: Path) -> None:
    out = _probe({"CXX": str(tmp_path / "no-such-compiler"), "STN_KERNEL_CACHE": str(tmp_path)})
    assert out.startswith("False torch (1, 2, 3, 3) |") and "failed" in out


def test_disabled_by_environment(tmp_path: Path) -> None:
    out = _probe({"STN_CPU_KERNEL": "0", "STN_KERNEL_CACHE": str(tmp_path)})
    assert out == "False torch (1, 2, 3, 3) | disabled by STN_CPU_KERNEL=0"


@pytest.mark.skipif(not cpu_kernel.available(), reason=f"no fused CPU kernel: {cpu_kernel.status()}")
def test_builds_into_the_cache_and_is_selected(tmp_path: Path) -> None:
    out = _probe({"STN_KERNEL_CACHE": str(tmp_path)})
    assert out.startswith("True cpu (1, 2, 3, 3) | loaded")
    (library,) = tmp_path.glob("linearized_cpu-*.so")
    assert library.stat().st_size > 0
    assert not any(ROOT.joinpath("training", "sampling").rglob("*.so"))  # nothing built in the tree
    # The second process loads the cached library without building it again.
    mtime = library.stat().st_mtime_ns
    assert _probe({"STN_KERNEL_CACHE": str(tmp_path)}).startswith("True cpu")
    assert library.stat().st_mtime_ns == mtime


@pytest.mark.skipif(not cpu_kernel.available(), reason=f"no fused CPU kernel: {cpu_kernel.status()}")
def test_non_contiguous_float32_and_threads_equal_the_pytorch_path() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 16, 17, 5, generator=gen).permute(0, 3, 1, 2)  # (3, 5, 16, 17), non-contiguous
    grid = (torch.rand(3, 7, 6, 2, generator=gen) * 2.4 - 1.2).transpose(1, 2)
    weight = torch.randn(3, 5, 6, 7, generator=gen)
    results = []
    for backend, threads in (("torch", 1), ("cpu", 1), ("cpu", 2)):
        torch.set_num_threads(threads)
        xi, gi = x.clone().requires_grad_(True), grid.clone().requires_grad_(True)
        try:
            out = grid_sample(
                xi,
                gi,
                "linearized",
                "reflection",
                generator=torch.Generator().manual_seed(3),
                backend=backend,
            )
        finally:
            torch.set_num_threads(1)
        (out * weight).sum().backward()
        assert xi.grad is not None and gi.grad is not None
        results.append((out.detach(), xi.grad, gi.grad))
    for other in results[1:]:
        torch.testing.assert_close(other[0], results[0][0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(other[1], results[0][1])
        torch.testing.assert_close(other[2], results[0][2], rtol=1e-4, atol=1e-4)
