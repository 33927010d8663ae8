"""``benchmarks/gpu_check.sh --dry-run``: the CPU-only parts of the prepared GPU check (environment, the
collection of the CUDA-marked tests, the benchmark on one tiny CPU workload, two training steps with the
final evaluation and figures) run and write their outputs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_gpu_check_dry_run(tmp_path: Path, gtsrb_dir: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "GTSRB_DATA_DIR": str(gtsrb_dir), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    assert "FAILED" not in log
    assert "test_triton_equals_the_pytorch_path_given_the_same_offsets" in log  # the CUDA tests collected
    assert (out / "env.txt").read_text().startswith("python ")
    table = (out / "sampler_cpu.md").read_text()
    assert "| N=4 C=3 20->9 |" in table and "fused / bil" in table
    assert (out / "train" / "eval.json").is_file()
    assert list((out / "train" / "plots").glob("*.png"))
    assert "(status 0)" in (out / "gpu_check.log").read_text().splitlines()[-1]
