"""``python -m training reproduce``: run every combination of a grid of configs, ``--jobs`` at a time.

A grid file (``training/configs/grid-<name>.toml`` or a path) holds ``base`` (a config file, relative to the
grid file), ``[axes]`` (``"section.key" = [values]``; every combination is one run) and optionally ``[set]``
(``"section.key" = value`` for every run). Each run is ``python -m training train --config <base> --set ...``
in its own process with its output in ``<out>/<run>/`` (log in ``train.log``); when it ends,
``<out>/<run>/result.json`` records its overrides, exit status and test figures, and a line is appended to
``<out>/results.jsonl``. Runs whose result.json records success are skipped, so an interrupted grid resumes.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from training.config import apply_overrides, load_config_file, toml_literal
from training.errors import ConfigError

GRID_DIR = Path(__file__).resolve().parent / "configs"


def load_grid(name: str) -> tuple[Path, dict[str, list[Any]], list[str]]:
    """Read a grid file: ``training/configs/grid-<name>.toml`` or a path (see the module docstring).

    Returns:
        ``(base config path, axes, fixed overrides as "section.key=value" strings)``.

    Raises:
        ConfigError: an unknown grid, an unparsable file or malformed axes.
    """
    path = Path(name)
    if not path.is_file():
        path = GRID_DIR / f"grid-{name}.toml"
    if not path.is_file():
        known = sorted(p.stem.removeprefix("grid-") for p in GRID_DIR.glob("grid-*.toml"))
        raise ConfigError(f"unknown grid {name!r} (known: {', '.join(known)})")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot parse grid file {path}: {exc}") from None
    axes = data.get("axes")
    if not isinstance(axes, dict) or not axes or not all(isinstance(v, list) and v for v in axes.values()):
        raise ConfigError(f"{path}: [axes] must map section.key to non-empty lists")
    base = (path.parent / str(data.get("base", "paper.toml"))).resolve()
    fixed = [f"{k}={toml_literal(v)}" for k, v in dict(data.get("set", {})).items()]
    return base, axes, fixed


def run_name(combo: dict[str, Any]) -> str:
    """The folder name of one grid point: its values joined by '-' (``r<rate>`` for downsampling rates)."""
    parts = []
    for key, value in combo.items():
        short = key.split(".")[-1]
        parts.append(f"r{value}" if short == "downsampling_rate" else str(value))
    return "-".join(parts).replace("/", "_")


def reproduce(
    grid: str, out: Path, *, jobs: int = 1, sets: list[str], dry_run: bool = False
) -> tuple[int, int]:
    """Run (or with ``dry_run`` list) every point of ``grid`` under ``out``, ``jobs`` processes at a time.

    Every run's config is validated before any starts; each gets ``cpu_count // jobs`` torch threads.

    Returns:
        ``(runs in the grid, runs that failed now)``.
    """
    base, axes, fixed = load_grid(grid)
    keys = list(axes)
    combos = [dict(zip(keys, values, strict=True)) for values in itertools.product(*axes.values())]
    jobs = max(1, jobs)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    runs: list[tuple[str, list[str]]] = []
    for combo in combos:
        name = run_name(combo)
        run_sets = [*fixed, *(f"{k}={toml_literal(v)}" for k, v in combo.items()), *sets]
        run_sets += [f"run.out={toml_literal(str(out / name))}", f"run.threads={threads}"]
        apply_overrides(load_config_file(base), run_sets)  # validate every run before starting any
        runs.append((name, run_sets))
    print(f"grid {grid}: {len(runs)} runs from {base}, {jobs} at a time, {threads} threads each")
    if dry_run:
        for name, run_sets in runs:
            print(f"{name}: " + " ".join(run_sets))
        return len(runs), 0
    out.mkdir(parents=True, exist_ok=True)
    pending = [r for r in runs if not _succeeded(out / r[0] / "result.json")]
    failed = 0
    # Each run is its own `python -m training train` process (own log, exit status, torch threads); the
    # pool's threads only wait for them, and the results are written here, one at a time.
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="reproduce")
    try:
        futures = [pool.submit(_run_point, base, out, name, run_sets) for name, run_sets in pending]
        for future in as_completed(futures):
            result = future.result()
            failed += _record(out, result)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on Ctrl-C: start no more runs
    return len(runs), failed


def _run_point(base: Path, out: Path, name: str, sets: list[str]) -> dict[str, Any]:
    """Run one grid point as ``python -m training train`` (output in ``out/name/train.log``); its record."""
    (out / name).mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "training", "train", "--config", str(base)]
    for s in sets:
        cmd += ["--set", s]
    started = time.time()
    with open(out / name / "train.log", "wb") as log:
        print(f"started {name}", flush=True)
        returncode = subprocess.run(cmd, stdout=log, stderr=log, check=False).returncode
    result: dict[str, Any] = {
        "name": name,
        "overrides": sets,
        "returncode": returncode,
        "wall_time_s": time.time() - started,
    }
    eval_path = out / name / "eval.json"
    if returncode == 0 and eval_path.is_file():
        result["eval"] = json.loads(eval_path.read_text(encoding="utf-8"))
    return result


def _record(out: Path, result: dict[str, Any]) -> int:
    """Write a finished run's result.json and results.jsonl line and print it; 1 when it failed, else 0."""
    name = result["name"]
    (out / name / "result.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    with open(out / "results.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(result) + "\n")
    e = result.get("eval", {})
    figures = (
        f"{100 * e['error_clean']:.2f}% clean, {100 * e['error_perturbed']:.2f}% perturbed"
        if e
        else f"FAILED (exit {result['returncode']}, see {out / name / 'train.log'})"
    )
    print(f"finished {name}: {figures}", flush=True)
    return 0 if e else 1


def _succeeded(path: Path) -> bool:
    try:
        return bool(json.loads(path.read_text(encoding="utf-8")).get("returncode") == 0)
    except (OSError, ValueError):
        return False
