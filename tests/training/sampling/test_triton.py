"""The Triton kernels, verified on CPU in Triton's interpreter: runs triton_interpreted.py in a subprocess
with ``TRITON_INTERPRET=1`` (it must be set before triton is imported). Skipped where triton is not installed
(it comes with the dev extra: ``pip install -e '.[training,dev]'``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from training.sampling import triton_kernel

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


@pytest.mark.skipif(not triton_kernel.importable(), reason="triton is not installed")
def test_triton_kernels_in_the_interpreter() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HERE / "triton_interpreted.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]
