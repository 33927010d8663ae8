"""``python -m training align``: command-line entry of the alignment study (:mod:`.alignment`).

Loads the evaluation and tuning images (seeded sample of the lossless GTSRB test set, RGB in [0, 1]), runs
:func:`training.experiments.alignment.run_study` and writes ``study.json``, ``cells/*.json`` and optionally
the recall figure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.errors import ConfigError
from training.experiments.config import AlignmentConfig

if TYPE_CHECKING:
    import numpy as np
    import torch


def load_images(
    rows: np.ndarray, data_dir: str | Path | None = None, cache_dir: Path | None = None
) -> torch.Tensor:
    """Test images ``rows`` of the lossless packed test file as float32 (N, 3, 50, 50) RGB in [0, 1]."""
    import torch

    from training.data import load_packed, resolve_data_dir
    from training.data.load import packed_file

    root = resolve_data_dir(data_dir)
    path = packed_file(root, "test", "lossless")
    if path is None:
        raise ConfigError(f"{root}: no packed lossless test file (gtsrb50_test_lossless.npz)")
    split = load_packed(path, rows=rows, cache_dir=cache_dir)
    return torch.from_numpy(split.images).permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``align`` subcommand's options (defaults: :class:`AlignmentConfig`)."""
    d = AlignmentConfig()
    parser.add_argument("--samplers", default=",".join(d.samplers), help="comma-separated sampler names")
    parser.add_argument("--rates", default=",".join(map(str, d.rates)), help="comma-separated rates r")
    parser.add_argument("--num-images", type=int, default=d.num_images, help="evaluation images")
    parser.add_argument("--tune-images", type=int, default=d.tune_images, help="learning-rate sweep images")
    parser.add_argument("--lrs", default=",".join(f"{x:g}" for x in d.lrs), help="Adam learning rates tried")
    parser.add_argument("--iterations", type=int, default=d.iterations, help="Adam steps")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of images, warps and offsets")
    parser.add_argument("--data-dir", help="GTSRB folder")
    parser.add_argument("--cache-dir", default=".data/cache", help="decoded-image cache ('none': off)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads")
    parser.add_argument("--out", default="docs/results/alignment", help="folder for study.json and cells/")
    parser.add_argument("--figure", help="also write the recall-against-rate PNG here")


def _split(text: str, kind: type) -> tuple[Any, ...]:
    try:
        return tuple(kind(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"cannot parse {text!r} as comma-separated {kind.__name__} values") from None


def config_from_args(args: argparse.Namespace) -> AlignmentConfig:
    """An :class:`AlignmentConfig` from the parsed ``align`` options."""
    return AlignmentConfig(
        samplers=_split(args.samplers, str),
        rates=_split(args.rates, int),
        num_images=args.num_images,
        tune_images=args.tune_images,
        lrs=_split(args.lrs, float),
        iterations=args.iterations,
        seed=args.seed,
    )


def command_line(config: AlignmentConfig, threads: int) -> str:
    """The ``python -m training align`` command that reproduces ``config``."""
    lrs = ",".join(f"{x:g}" for x in config.lrs)
    rates = ",".join(map(str, config.rates))
    return (
        f"python -m training align --num-images {config.num_images} --tune-images {config.tune_images} "
        f"--iterations {config.iterations} --seed {config.seed} --lrs {lrs} "
        f"--samplers {','.join(config.samplers)} --rates {rates} --threads {threads}"
    )


def main_entry(args: argparse.Namespace) -> int:
    """``python -m training align``: run the study and write its JSON (and the figure)."""
    import torch

    from training.experiments.alignment import run_study, select_rows, true_warps_for, write_study

    config = config_from_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    cache = None if str(args.cache_dir).lower() == "none" else Path(args.cache_dir)
    rows, tune_rows = select_rows(config)
    images = load_images(rows, args.data_dir, cache)
    tune = load_images(tune_rows, args.data_dir, cache) if len(tune_rows) else None
    warps, tune_warps = true_warps_for(config)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    log(
        f"alignment: {config.num_images} images (+{config.tune_images} tuning), samplers "
        f"{','.join(config.samplers)}, rates {','.join(map(str, config.rates))}, {config.iterations} Adam "
        f"steps, {torch.get_num_threads()} thread(s)"
    )
    result = run_study(config, images, warps, tune, tune_warps, log=log)
    result.command = command_line(config, torch.get_num_threads())
    for path in write_study(result, args.out):
        log(f"wrote {path}")
    if args.figure:
        from training import plots

        recalls = {
            s: [next(c.recall for c in result.cells if c.sampler == s and c.rate == r) for r in config.rates]
            for s in config.samplers
        }
        title = (
            f"Alignment recall (corner error < {config.success_px:g} px), "
            f"{config.num_images} GTSRB test images"
        )
        log(f"wrote {plots.plot_alignment_recall(list(config.rates), recalls, args.figure, title)}")
    print(f"alignment: {len(result.cells)} cells in {result.wall_time_s:.0f} s")
    return 0
