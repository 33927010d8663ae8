"""The fused CPU kernel of linearized sampling (``csrc/linearized_cpu.cpp``): built on first use, loaded with
ctypes, and optional.

What it computes: for every output location, the K - 1 auxiliary bilinear samples, the per-channel
least-squares sums and the fitted plane's value and slope, in one pass over the locations (no output-sized
temporaries; see docs/sampler.md). The offsets are *given* to it, drawn from the same torch random stream as
the pure PyTorch path (:func:`training.sampling.linearized.draw_chunk_offsets`), so both paths agree to
rounding given a generator. float32 and float64 only (half precision runs the PyTorch path).

Build: the source is plain C++17 with a C ABI and no torch headers, so ``g++ -O3 -shared`` builds it in about
a second. The library is cached in ``$STN_KERNEL_CACHE`` (default ``$XDG_CACHE_HOME/stn-signs`` or
``~/.cache/stn-signs``), outside the source tree, under a name that hashes the source, the compiler, the flags
and the CPU's instruction-set flags (``-march=native`` builds never move to another CPU). ``STN_CPU_KERNEL=0``
disables it. Where no compiler exists or the build fails, :func:`load` returns None, :func:`status` says why,
and the sampler runs the PyTorch path: nothing is raised, printed or warned.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "linearized_cpu.cpp"
FLAGS = ("-O3", "-march=native", "-fno-trapping-math", "-std=c++17", "-shared", "-fPIC", "-pthread")
ABI_VERSION = 1
BUILD_TIMEOUT_S = 180

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_status = "not loaded yet"
_tried = False


def cache_dir() -> Path:
    """Where built libraries are kept: ``$STN_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/stn-signs``, else
    ``~/.cache/stn-signs``."""
    if os.environ.get("STN_KERNEL_CACHE"):
        return Path(os.environ["STN_KERNEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stn-signs"


def _cpu_flags() -> str:
    """The CPU's instruction-set flags (Linux), so that a ``-march=native`` build is keyed by them."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")


def library_path(compiler: str) -> Path:
    """The cache path of the library for this source, compiler, flags and CPU."""
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), compiler.encode(), " ".join(FLAGS).encode(), _cpu_flags().encode()):
        key.update(part)
        key.update(b"\0")
    key.update(platform.machine().encode())
    return cache_dir() / f"linearized_cpu-{key.hexdigest()[:16]}.so"


def build(compiler: str, target: Path) -> None:
    """Compile the source into ``target`` (atomically: a temporary file, then a rename).

    Raises:
        OSError, subprocess.SubprocessError: when the compiler fails or times out.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        # -march=native first; without it where the compiler does not know it (some ARM compilers).
        for flags in (FLAGS, tuple(f for f in FLAGS if f != "-march=native")):
            result = subprocess.run(
                [compiler, *flags, str(SOURCE), "-o", tmp],
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT_S,
                check=False,
            )
            if result.returncode == 0:
                break
        else:
            raise OSError(f"{compiler} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _bind(lib: ctypes.CDLL) -> None:
    i64, f64, i32, ptr = ctypes.c_int64, ctypes.c_double, ctypes.c_int, ctypes.c_void_p
    fit_args = [ptr, i64, i64, i64, i64, ptr, i64, i64, ptr, i64, f64, f64, i32, i32, f64, ptr, ptr, i64, i32]
    for name in ("stn_linearized_fit_f32", "stn_linearized_fit_f64"):
        fn = getattr(lib, name)
        fn.argtypes = fit_args
        fn.restype = None
    for name in ("stn_grid_grad_f32", "stn_grid_grad_f64"):
        fn = getattr(lib, name)
        fn.argtypes = [ptr, ptr, i64, i64, i64, i64, ptr, i32]
        fn.restype = None
    lib.stn_abi_version.restype = ctypes.c_int


def load() -> ctypes.CDLL | None:
    """The kernel library, built if needed (once per process); None where it cannot be built or loaded."""
    global _library, _status, _tried
    if _tried:
        return _library
    with _lock:
        if _tried:
            return _library
        _library, _status = _load()
        _tried = True
        logger.debug("fused CPU sampler kernel: %s", _status)
    return _library


def _load() -> tuple[ctypes.CDLL | None, str]:
    if os.environ.get("STN_CPU_KERNEL", "1") == "0":
        return None, "disabled by STN_CPU_KERNEL=0"
    if not sys.platform.startswith(("linux", "darwin")):
        return None, f"unsupported platform {sys.platform}"
    compiler = _compiler()
    if compiler is None:
        return None, "no C++ compiler found (g++, c++, clang++ or $CXX)"
    try:
        path = library_path(compiler)
        if not path.exists():
            build(compiler, path)
        lib = ctypes.CDLL(str(path))
        _bind(lib)
        if lib.stn_abi_version() != ABI_VERSION:
            return None, f"ABI version {lib.stn_abi_version()} != {ABI_VERSION} ({path})"
    except (OSError, subprocess.SubprocessError, AttributeError) as error:
        return None, f"build or load failed: {error}"
    return lib, f"loaded {path}"


def status() -> str:
    """Why the kernel is or is not in use (after :func:`load`)."""
    return _status


def available() -> bool:
    """Whether the kernel library is (or can be) loaded."""
    return load() is not None


def supports(tensor: torch.Tensor) -> bool:
    """Whether the kernel takes this input: a CPU float32/float64 tensor, and the library is loadable."""
    return tensor.device.type == "cpu" and tensor.dtype in (torch.float32, torch.float64) and available()


def _ptr(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def fit(
    input: torch.Tensor,
    grid: torch.Tensor,
    z: torch.Tensor,
    spread: tuple[float, float],
    padding_code: int,
    align_corners: bool,
    rcond: float,
    *,
    value: torch.Tensor | None,
    slope: torch.Tensor,
) -> None:
    """Run the fused fit on one batch chunk, writing ``value`` and ``slope`` in place.

    Args:
        input: (N, C, H_in, W_in), contiguous, float32 or float64.
        grid: (N, H_out, W_out, 2), contiguous, the input's dtype, normalized, x then y.
        z: (K - 1, 2, N, H_out, W_out), contiguous, the input's dtype: the standard-normal offsets (x plane,
            then y plane, per auxiliary point); the offset is ``z * spread``.
        spread: (s_x, s_y), the per-axis std in normalized units.
        padding_code: 0 zeros, 1 border, 2 reflection.
        align_corners: ``grid_sample``'s flag.
        rcond: the conditioning threshold of :data:`training.sampling.fit.RCOND`.
        value: (N, C, H_out, W_out) contiguous output for the plane's value, or None (not computed).
        slope: (2, N, C, H_out, W_out) output, ``slope[0]`` and ``slope[1]`` contiguous, the input's dtype.
    """
    lib = load()
    if lib is None:
        raise RuntimeError(f"the fused CPU kernel is not available: {status()}")
    n, c, h_in, w_in = input.shape
    h_out, w_out = grid.shape[1:3]
    if n == 0 or c == 0 or h_out == 0 or w_out == 0:
        return
    fn = lib.stn_linearized_fit_f64 if input.dtype == torch.float64 else lib.stn_linearized_fit_f32
    fn(
        _ptr(input),
        n,
        c,
        h_in,
        w_in,
        _ptr(grid),
        h_out,
        w_out,
        _ptr(z),
        z.shape[0],
        spread[0],
        spread[1],
        padding_code,
        int(align_corners),
        rcond,
        _ptr(value),
        _ptr(slope),
        slope.stride(0),
        torch.get_num_threads(),
    )


def grid_gradient(grad_output: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    """``sum_c grad_output[:, c] * slope[:, :, c]`` per location.

    Args:
        grad_output: (N, C, H_out, W_out), contiguous, the slope's dtype.
        slope: (2, N, C, H_out, W_out), ``slope[0]`` and ``slope[1]`` contiguous.

    Returns:
        (N, H_out, W_out, 2), the slope's dtype.
    """
    lib = load()
    if lib is None:
        raise RuntimeError(f"the fused CPU kernel is not available: {status()}")
    n, c, h_out, w_out = grad_output.shape
    out = torch.empty((n, h_out, w_out, 2), dtype=slope.dtype)
    if out.numel() == 0:
        return out.zero_()
    fn = lib.stn_grid_grad_f64 if slope.dtype == torch.float64 else lib.stn_grid_grad_f32
    fn(
        _ptr(grad_output),
        _ptr(slope),
        slope.stride(0),
        n,
        c,
        h_out * w_out,
        _ptr(out),
        torch.get_num_threads(),
    )
    return out
