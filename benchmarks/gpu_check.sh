#!/usr/bin/env bash
# The prepared GPU check of the linearized sampler (issue 18), for one lent CUDA device (H200: < 8 minutes).
#
#   benchmarks/gpu_check.sh [--dry-run] [--out DIR]
#
# Needs only what the device image has: python3 (3.12) with torch (CUDA), triton, numpy, pillow, matplotlib
# and pytest; no registry access, nothing installed. Run from anywhere; it works in the repository root. The
# GTSRB data is read from $GTSRB_DATA_DIR, else ./shared/data/gtsrb, else ../shared/data/gtsrb. On the device
# machine only the checkout travels (64 MiB): copy classes.csv, gtsrb50_train_compact.npz and
# gtsrb50_test_compact.npz (46 MiB) into ./shared/data/gtsrb first (git-ignored through .git/info/exclude).
# A failed step is logged and the next one still runs; the exit status is 1 if any step failed.
#
# Steps, each logged to $OUT/gpu_check.log (OUT: --out, else $OUT, else ./gpu_check_out):
#   1. the environment: python, torch, CUDA device, triton (versions into $OUT/env.txt);
#   2. the CUDA-marked tests (tests/training/sampling/test_cuda.py: Triton vs the PyTorch path on the same
#      offsets, CUDA vs CPU, half precision), junit XML into $OUT;
#   3. benchmarks/sampler.py on CUDA: torch bilinear, the PyTorch path and the Triton kernel, ratios and peak
#      memory, into $OUT/sampler_cuda.md;
#   4. a short training run of a linearized STN on CUDA with AMP (bf16), its figures (plots/*.png) and
#      metrics into $OUT/train.
#
# --dry-run runs the CPU-only parts here, fast: the environment step, the collection of the CUDA-marked tests
# (they skip without a device), the benchmark on one tiny CPU workload, and 2 training steps on 64 images on
# the CPU with the final evaluation on 32 images and the figures.
set -euo pipefail

dry_run=0
out="${OUT:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --out) out="$2"; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${out:-$root/gpu_check_out}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
log="$out/gpu_check.log"
: > "$log"
py="${PYTHON:-python3}"
if [ -x "$root/.venv/bin/python" ] && [ -z "${PYTHON:-}" ] && [ "$dry_run" = 1 ]; then
  py="$root/.venv/bin/python"
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

data="${GTSRB_DATA_DIR:-}"
for candidate in "$root/shared/data/gtsrb" "$root/../shared/data/gtsrb"; do
  if [ -z "$data" ] && [ -f "$candidate/gtsrb50_train_compact.npz" ]; then data="$candidate"; fi
done
if [ -z "$data" ]; then
  echo "gpu_check.sh: GTSRB data not found (set GTSRB_DATA_DIR)" | tee -a "$log" >&2
  exit 1
fi
export GTSRB_DATA_DIR="$data"

status=0
step() {
  echo "=== $1 ($(date -u +%H:%M:%S))" | tee -a "$log"
}
failed() {
  echo "=== FAILED: $1" | tee -a "$log"
  status=1
}

step "1. environment"
"$py" - <<'PY' 2>&1 | tee "$out/env.txt" | tee -a "$log"
import importlib.util, platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
print("device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
spec = importlib.util.find_spec("triton")
if spec is not None:
    import triton
    print("triton", triton.__version__)
else:
    print("triton not installed")
from training.sampling import cpu_kernel
cpu_kernel.load()
print("fused CPU kernel:", cpu_kernel.status())
PY

if [ "$dry_run" = 0 ]; then
  "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "gpu_check.sh: no CUDA device (use --dry-run)" | tee -a "$log" >&2; exit 1; }
  step "2. CUDA tests"
  "$py" -m pytest -q -p no:cacheprovider -m cuda tests/training/sampling --junitxml "$out/cuda_tests.xml" \
    2>&1 | tee -a "$log" || failed "CUDA tests"
  step "3. sampler benchmark on CUDA"
  "$py" -m benchmarks.sampler --device cuda --repeats 50 --out "$out/sampler_cuda.md" 2>&1 | tee -a "$log" \
    || failed "benchmark"
  step "4. training smoke run on CUDA (AMP, linearized STN)"
  "$py" -m training train --config training/configs/stn-large.toml --device cuda --epochs 2 \
    --limit-train 8000 --limit-test 2000 --threads 4 --data-dir "$data" --out "$out/train" 2>&1 \
    | tee -a "$log" || failed "training"
else
  step "2. CUDA tests (dry run: collection only)"
  "$py" -m pytest -q -p no:cacheprovider -m cuda --collect-only tests/training/sampling 2>&1 \
    | tee -a "$log" || failed "CUDA test collection"
  step "3. sampler benchmark (dry run: one tiny CPU workload)"
  "$py" -m benchmarks.sampler --device cpu --threads 1 --repeats 1 --quick --skip-memory \
    --out "$out/sampler_cpu.md" 2>&1 | tee -a "$log" || failed "benchmark"
  step "4. training smoke run (dry run: CPU, 2 steps)"
  "$py" -m training train --config training/configs/stn-large.toml --device cpu --epochs 1 --max-steps 2 \
    --batch-size 32 --limit-train 64 --limit-test 32 --threads 1 --data-dir "$data" --out "$out/train" \
    2>&1 | tee -a "$log" || failed "training"
fi
step "done: $out (status $status)"
exit "$status"
