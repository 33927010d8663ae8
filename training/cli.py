"""``python -m training train|evaluate|export|plots|reproduce|align`` (console script ``stn-train``).

Every :class:`TrainingError` (bad data folder, bad config key, missing or corrupt checkpoint, failed
export) ends with one line ``error: <message>`` on stderr and exit status 2; an unexpected exception prints
one line and exits 1 (with the traceback under ``--debug``); argparse usage errors exit 2.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.errors import TrainingError

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_ERROR = 2

# Explicit flags of `train`: (flag, config section.key, type, help).
_TRAIN_FLAGS: list[tuple[str, str, type, str]] = [
    ("--model", "model.model_type", str, "cnn | stn | icstn | stn-c | stn-sl"),
    ("--arch", "model.arch", str, "paper | large"),
    ("--warp", "model.warp_type", str, "translation | similarity | affine | homography"),
    ("--sampler", "model.sampler", str, "bilinear | nearest | bicubic | linearized | multiscale"),
    ("--eval-forward", "model.eval_forward", str, "linearized sampler's eval forward: bilinear | expected"),
    ("--rate", "model.downsampling_rate", int, "downsampling rate r: 1 | 2 | 4 | 8"),
    ("--warp-n", "model.warp_n", int, "IC-STN recurrent warps"),
    ("--epochs", "optim.epochs", int, "epochs"),
    ("--batch-size", "optim.batch_size", int, "images per step (per process)"),
    ("--lr", "optim.lr", float, "peak learning rate"),
    ("--data-dir", "data.data_dir", str, "GTSRB folder (default: $GTSRB_DATA_DIR or ../shared/data/gtsrb)"),
    ("--limit-train", "data.limit_train", int, "train on a seeded random subset of N images"),
    ("--limit-test", "data.limit_test", int, "final evaluation on the first N test images"),
    ("--out", "run.out", str, "output folder"),
    ("--seed", "run.seed", int, "random seed"),
    ("--resume", "run.resume", str, "resume from a checkpoint (out/checkpoint.pt)"),
    ("--init-from", "run.init_from", str, "fine-tune: start from a checkpoint's weights, fresh optimizer"),
    ("--threads", "run.threads", int, "torch intra-op threads"),
    ("--device", "run.device", str, "auto | cpu | cuda"),
    ("--max-steps", "run.max_steps", int, "stop after N optimizer steps"),
]


def _add_common(parser: argparse.ArgumentParser, *, sub: bool = True) -> None:
    # SUPPRESS on the subcommands, so `--debug train` is not reset by the subparser's default
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS if sub else False,
        help="print tracebacks of unexpected errors",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of all subcommands."""
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    _add_common(parser, sub=False)
    commands = "{train,evaluate,export,plots,reproduce,align}"
    sub = parser.add_subparsers(dest="command", required=True, metavar=commands)

    p = sub.add_parser("train", help="train a model (config file + overrides)")
    _add_common(p)
    p.add_argument("--config", help="TOML config file (training/configs/*.toml)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a key")
    for flag, key, typ, text in _TRAIN_FLAGS:
        p.add_argument(flag, dest=key.replace(".", "__"), type=typ, default=None, help=f"{text} ({key})")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-final-eval", action="store_true", help="skip the final test-set evaluation")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")

    p = sub.add_parser("evaluate", help="clean and perturbed test error of a checkpoint")
    _add_common(p)
    p.add_argument("--checkpoint", required=True, help="model.pt from training")
    p.add_argument("--data-dir", help="GTSRB folder")
    p.add_argument("--limit", type=int, help="only the first N test images (default: the full test set)")
    p.add_argument("--variant", default="lossless", choices=["lossless", "compact"], help="packed test file")
    p.add_argument("--seed", type=int, default=1234, help="seed of the fixed perturbations (default 1234)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--json", help="write the figures as JSON (export --metrics reads it)")
    p.add_argument("--no-per-class", action="store_true", help="overall figures only")
    p.add_argument(
        "--eval-forward",
        choices=["bilinear", "expected"],
        help="override the linearized sampler's inference forward (default: the checkpoint's)",
    )

    p = sub.add_parser("export", help="write an ONNX model bundle (model.onnx + model.json)")
    _add_common(p)
    p.add_argument("--checkpoint", required=True, help="model.pt from training")
    p.add_argument("--out", required=True, help="bundle folder, e.g. models/stn-linearized")
    p.add_argument("--name", help="bundle name (default: the folder name)")
    p.add_argument("--version", default="1.0.0", help="bundle version (default 1.0.0)")
    p.add_argument("--description", default="", help="free text for the model card")
    p.add_argument("--metrics", help="eval.json from `evaluate --json` or training (else evaluate here)")
    p.add_argument(
        "--val-metrics", help="val.json written by training (validation figures recorded in the card)"
    )
    p.add_argument("--data-dir", help="GTSRB folder")
    p.add_argument("--limit", type=int, help="evaluate on the first N test images only (tests)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument(
        "--eval-forward",
        choices=["bilinear", "expected"],
        help="override the linearized sampler's inference forward (default: the checkpoint's)",
    )
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.add_argument(
        "--default", action="store_true", help="also mark this bundle as the default (DEFAULT file)"
    )

    p = sub.add_parser("plots", help="draw a finished run's PNG plots from its checkpoint")
    _add_common(p)
    p.add_argument("--checkpoint", required=True, help="model.pt from training")
    p.add_argument("--out", required=True, help="folder for the PNG files")
    p.add_argument("--data-dir", help="GTSRB folder")
    p.add_argument("--limit", type=int, help="only the first N test images (default: the full test set)")
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.add_argument("--device", default="cpu", help="cpu | cuda")

    p = sub.add_parser("reproduce", help="run a named grid of configs (training/configs/grid-*.toml)")
    _add_common(p)
    p.add_argument("grid", help="grid name (e.g. samplers) or a grid TOML file")
    p.add_argument("--out", default="runs/reproduce", help="output folder (one sub-folder per run)")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (separate processes)")
    p.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override every run"
    )
    p.add_argument("--dry-run", action="store_true", help="list the runs and exit")

    from training.experiments.align_cli import add_arguments as add_align_arguments

    p = sub.add_parser("align", help="alignment study: recover known warps through each sampler (issue 5)")
    _add_common(p)
    add_align_arguments(p)
    return parser


def _train_config(args: argparse.Namespace) -> Any:
    from training.config import TrainConfig, apply_overrides, load_config_file

    config = load_config_file(args.config) if args.config else TrainConfig()
    config = apply_overrides(config, list(args.set))
    flags = []
    for _flag, key, _typ, _text in _TRAIN_FLAGS:
        value = getattr(args, key.replace(".", "__"))
        if value is not None:
            flags.append(f"{key}={_toml_literal(value)}")
    if args.no_plots:
        flags.append("run.plots=false")
    if args.no_final_eval:
        flags.append("run.final_eval=false")
    return apply_overrides(config, flags)


def _toml_literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def cmd_train(args: argparse.Namespace) -> int:
    """``train``: resolve the config and run training."""
    config = _train_config(args)
    if args.print_config:
        print(config.to_json())
        return EXIT_OK
    from training.train import train

    result = train(config)
    print(f"model: {result.model_path}")
    if result.eval is not None:
        e = result.eval
        print(f"test error: {100 * e.error_clean:.3f}% clean, {100 * e.error_perturbed:.3f}% perturbed")
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``evaluate``: print clean / perturbed test error, overall and per class."""
    from training.data import load_class_names, resolve_data_dir
    from training.evaluate import evaluate_checkpoint, format_result

    root = resolve_data_dir(args.data_dir)
    result, _ = evaluate_checkpoint(
        args.checkpoint,
        data_dir=root,
        limit=args.limit,
        variant=args.variant,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        threads=args.threads,
        eval_forward=args.eval_forward,
    )
    print(f"checkpoint: {args.checkpoint}")
    print(format_result(result, load_class_names(root), per_class=not args.no_per_class))
    if args.json:
        result.write_json(args.json)
        print(f"wrote {args.json}")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    """``export``: write and verify a model bundle."""
    import torch

    from training.export import export_bundle, mark_default

    if args.threads:
        torch.set_num_threads(args.threads)
    report = export_bundle(
        args.checkpoint,
        args.out,
        name=args.name,
        version=args.version,
        description=args.description,
        metrics=args.metrics,
        validation=args.val_metrics,
        data_dir=args.data_dir,
        limit=args.limit,
        opset=args.opset,
        eval_forward=args.eval_forward,
    )
    m = report.card["metrics"]
    print(
        f"wrote {report.onnx_path} and {report.json_path} (sha256 {report.sha256[:12]}..., test error "
        f"{100 * m['test_error_clean']:.3f}% clean / {100 * m['test_error_perturbed']:.3f}% perturbed on "
        f"{m['num_images']} images; onnxruntime parity max |diff| logits "
        f"{report.max_abs_diff['logits']:.2g}, warp {report.max_abs_diff['warp']:.2g})"
    )
    if args.default:
        print(f"marked default: {mark_default(report.bundle_dir)}")
    return EXIT_OK


GRID_DIR = Path(__file__).resolve().parent / "configs"


def cmd_plots(args: argparse.Namespace) -> int:
    """``plots``: training curves, class crops, confusion matrix and rotation plot of a checkpoint."""
    import torch

    from training.train import plots_from_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    written = plots_from_checkpoint(
        args.checkpoint, args.out, data_dir=args.data_dir, limit=args.limit, device=args.device
    )
    for path in written:
        print(f"wrote {path}")
    return EXIT_OK


def load_grid(name: str) -> tuple[Path, dict[str, list[Any]], list[str]]:
    """Read a grid file: ``training/configs/grid-<name>.toml`` or a path.

    A grid file holds ``base`` (a config file, relative to the grid file), ``[axes]``
    (``"section.key" = [values]``; every combination is one run) and optionally ``[set]``
    (``"section.key" = value`` for every run).

    Returns:
        ``(base config path, axes, fixed overrides as "section.key=value" strings)``.
    """
    import tomllib

    from training.errors import ConfigError

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
    fixed = [f"{k}={_toml_literal(v)}" for k, v in dict(data.get("set", {})).items()]
    return base, axes, fixed


def _run_name(combo: dict[str, Any]) -> str:
    parts = []
    for key, value in combo.items():
        short = key.split(".")[-1]
        parts.append(f"r{value}" if short == "downsampling_rate" else str(value))
    return "-".join(parts).replace("/", "_")


def cmd_reproduce(args: argparse.Namespace) -> int:
    """``reproduce``: run every combination of a grid, sequentially or ``--jobs`` processes at a time.

    Each run is ``python -m training train --config <base> --set ...`` in its own process with its output
    in ``<out>/<run>/`` (log in ``train.log``); when it ends, ``<out>/<run>/result.json`` records its
    overrides, exit status and test figures, and a line is appended to ``<out>/results.jsonl``. Runs whose
    result.json records success are skipped, so an interrupted grid resumes.
    """
    import itertools
    import json
    import os
    import subprocess
    import time

    from training.config import apply_overrides, load_config_file

    base, axes, fixed = load_grid(args.grid)
    out = Path(args.out)
    keys = list(axes)
    combos = [dict(zip(keys, values, strict=True)) for values in itertools.product(*axes.values())]
    jobs = max(1, args.jobs)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    runs: list[tuple[str, list[str]]] = []
    for combo in combos:
        name = _run_name(combo)
        sets = [*fixed, *(f"{k}={_toml_literal(v)}" for k, v in combo.items()), *args.set]
        sets += [f"run.out={_toml_literal(str(out / name))}", f"run.threads={threads}"]
        apply_overrides(load_config_file(base), sets)  # validate every run before starting any
        runs.append((name, sets))
    print(f"grid {args.grid}: {len(runs)} runs from {base}, {jobs} at a time, {threads} threads each")
    if args.dry_run:
        for name, sets in runs:
            print(f"{name}: " + " ".join(sets))
        return EXIT_OK
    out.mkdir(parents=True, exist_ok=True)
    pending = [r for r in runs if not _succeeded(out / r[0] / "result.json")]
    running: list[tuple[str, list[str], subprocess.Popen[bytes], float, Any]] = []
    failed = 0
    while pending or running:
        while pending and len(running) < jobs:
            name, sets = pending.pop(0)
            (out / name).mkdir(parents=True, exist_ok=True)
            log = open(out / name / "train.log", "wb")  # noqa: SIM115 - closed when the run ends
            cmd = [sys.executable, "-m", "training", "train", "--config", str(base)]
            for s in sets:
                cmd += ["--set", s]
            running.append((name, sets, subprocess.Popen(cmd, stdout=log, stderr=log), time.time(), log))
            print(f"started {name}", flush=True)
        time.sleep(1.0)
        for item in list(running):
            name, sets, proc, started, log = item
            if proc.poll() is None:
                continue
            running.remove(item)
            log.close()
            result: dict[str, Any] = {
                "name": name,
                "overrides": sets,
                "returncode": proc.returncode,
                "wall_time_s": time.time() - started,
            }
            eval_path = out / name / "eval.json"
            if proc.returncode == 0 and eval_path.is_file():
                result["eval"] = json.loads(eval_path.read_text(encoding="utf-8"))
            else:
                failed += 1
            (out / name / "result.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
            with open(out / "results.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(result) + "\n")
            e = result.get("eval", {})
            figures = (
                f"{100 * e['error_clean']:.2f}% clean, {100 * e['error_perturbed']:.2f}% perturbed"
                if e
                else f"FAILED (exit {proc.returncode}, see {out / name / 'train.log'})"
            )
            print(f"finished {name}: {figures}", flush=True)
    if failed:
        print(f"error: {failed} of {len(runs)} runs failed", file=sys.stderr)
        return EXIT_UNEXPECTED
    return EXIT_OK


def _succeeded(path: Path) -> bool:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8")).get("returncode") == 0
    except (OSError, ValueError):
        return False


def cmd_align(args: argparse.Namespace) -> int:
    """``align``: the alignment study (training/experiments/alignment.py)."""
    from training.experiments.align_cli import main_entry

    return main_entry(args)


_COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "export": cmd_export,
    "plots": cmd_plots,
    "reproduce": cmd_reproduce,
    "align": cmd_align,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 user error, 1 unexpected error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except TrainingError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        print(
            f"error: unexpected {type(exc).__name__}: {_one_line(exc)} (run with --debug for a traceback)",
            file=sys.stderr,
        )
        return EXIT_UNEXPECTED


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
