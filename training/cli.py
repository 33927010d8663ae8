"""``python -m training train|evaluate|export|plots|reproduce|align`` (console script ``stn-train``).

Every :class:`TrainingError` (bad data folder, bad config key, missing or corrupt checkpoint, failed
export) ends with one line ``error: <message>`` on stderr and exit status 2, and so does a command run without
the training extra installed (torch, onnx, matplotlib: the line names ``pip install -e '.[training]'``); an
unexpected exception prints one line and exits 1 (with the traceback under ``--debug``); argparse usage errors
exit 2.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.errors import TrainingError
from training.reproduce import GRID_DIR, load_grid  # re-exported: `reproduce` used to live here

__all__ = ["GRID_DIR", "build_parser", "load_grid", "main"]

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_ERROR = 2

TRAINING_EXTRA = ("torch", "onnx", "matplotlib")
"""Top-level modules of the ``training`` extra (pyproject.toml), absent from a service-only install."""


def _one_of(values: tuple[object, ...]) -> str:
    return " | ".join(map(str, values))


def _train_flags() -> list[tuple[str, str, type, str]]:
    """Explicit flags of `train`: (flag, config section.key, type, help)."""
    from training.conventions import DOWNSAMPLING_RATES, EVAL_FORWARDS, SAMPLING_MODES, WARP_TYPES
    from training.models.config import ARCHS, MODEL_TYPES

    return [
        ("--model", "model.model_type", str, _one_of(MODEL_TYPES)),
        ("--arch", "model.arch", str, _one_of(ARCHS)),
        ("--warp", "model.warp_type", str, _one_of(WARP_TYPES)),
        ("--sampler", "model.sampler", str, _one_of(SAMPLING_MODES)),
        (
            "--eval-forward",
            "model.eval_forward",
            str,
            f"linearized sampler's eval forward: {_one_of(EVAL_FORWARDS)}",
        ),
        ("--rate", "model.downsampling_rate", int, f"downsampling rate r: {_one_of(DOWNSAMPLING_RATES)}"),
        ("--warp-n", "model.warp_n", int, "IC-STN recurrent warps"),
        ("--epochs", "optim.epochs", int, "epochs"),
        ("--batch-size", "optim.batch_size", int, "images per step (per process)"),
        ("--lr", "optim.lr", float, "peak learning rate"),
        (
            "--data-dir",
            "data.data_dir",
            str,
            "GTSRB folder (default: $GTSRB_DATA_DIR or ../shared/data/gtsrb)",
        ),
        ("--limit-train", "data.limit_train", int, "train on a seeded random subset of N images"),
        ("--limit-test", "data.limit_test", int, "final evaluation on the first N test images"),
        ("--out", "run.out", str, "output folder"),
        ("--seed", "run.seed", int, "random seed"),
        ("--resume", "run.resume", str, "resume from a checkpoint (out/checkpoint.pt)"),
        (
            "--init-from",
            "run.init_from",
            str,
            "fine-tune: start from a checkpoint's weights, fresh optimizer",
        ),
        ("--threads", "run.threads", int, "torch intra-op threads"),
        ("--device", "run.device", str, "auto | cpu | cuda"),
        ("--max-steps", "run.max_steps", int, "stop after N optimizer steps"),
    ]


_METAVARS = {
    "--data-dir": "DIR",
    "--out": "DIR",
    "--resume": "CHECKPOINT",
    "--init-from": "CHECKPOINT",
    "--rate": "R",
}


def _metavar(flag: str, typ: type) -> str:
    """What the help shows after a flag: N for counts, else a word for the value (``--limit-train N``)."""
    if flag in _METAVARS:
        return _METAVARS[flag]
    return "N" if typ is int and flag != "--seed" else flag.lstrip("-").upper().replace("-", "_")


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
    from training.conventions import EVAL_FORWARDS

    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train, evaluate and export spatial-transformer traffic-sign classifiers (GTSRB).",
    )
    _add_common(parser, sub=False)
    commands = "{train,evaluate,export,plots,reproduce,align}"
    sub = parser.add_subparsers(dest="command", required=True, metavar=commands)

    p = sub.add_parser("train", help="train a model (config file + overrides)")
    _add_common(p)
    p.add_argument("--config", metavar="FILE", help="TOML config file (training/configs/*.toml)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a key")
    for flag, key, typ, text in _train_flags():
        p.add_argument(
            flag,
            dest=key.replace(".", "__"),
            type=typ,
            default=None,
            metavar=_metavar(flag, typ),
            help=f"{text} (config key {key})",
        )
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
    p.add_argument(
        "--split",
        default="test",
        choices=["test", "validation"],
        help="test: the GTSRB test set (default); validation: the held-out training tracks of the "
        "checkpoint's own training config (for choosing between candidates without the test set)",
    )
    p.add_argument("--no-per-class", action="store_true", help="overall figures only")
    p.add_argument(
        "--eval-forward",
        choices=EVAL_FORWARDS,
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
        choices=EVAL_FORWARDS,
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

    p = sub.add_parser("align", help="alignment study: recover known warps through each sampler")
    _add_common(p)
    add_align_arguments(p)
    return parser


def _train_config(args: argparse.Namespace) -> Any:
    from training.config import TrainConfig, apply_overrides, load_config_file, toml_literal

    config = load_config_file(args.config) if args.config else TrainConfig()
    config = apply_overrides(config, list(args.set))
    flags = []
    for _flag, key, _typ, _text in _train_flags():
        value = getattr(args, key.replace(".", "__"))
        if value is not None:
            flags.append(f"{key}={toml_literal(value)}")
    if args.no_plots:
        flags.append("run.plots=false")
    if args.no_final_eval:
        flags.append("run.final_eval=false")
    return apply_overrides(config, flags)


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
    if args.split == "validation":
        from training.reporting import evaluate_checkpoint_on_validation

        result = evaluate_checkpoint_on_validation(
            args.checkpoint, data_dir=root, device=args.device, threads=args.threads
        )
    else:
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


def cmd_reproduce(args: argparse.Namespace) -> int:
    """``reproduce``: run every combination of a grid (:func:`training.reproduce.reproduce`)."""
    from training.reproduce import reproduce

    runs, failed = reproduce(
        args.grid, Path(args.out), jobs=args.jobs, sets=list(args.set), dry_run=args.dry_run
    )
    if failed:
        print(f"error: {failed} of {runs} runs failed", file=sys.stderr)
        return EXIT_UNEXPECTED
    return EXIT_OK


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
        if isinstance(exc, ModuleNotFoundError) and exc.name in TRAINING_EXTRA:
            print(
                f"error: `python -m training {args.command}` needs the training extra "
                f"({exc.name} is not installed): pip install -e '.[training]'",
                file=sys.stderr,
            )
            return EXIT_ERROR
        print(
            f"error: unexpected {type(exc).__name__}: {_one_line(exc)} (run with --debug for a traceback)",
            file=sys.stderr,
        )
        return EXIT_UNEXPECTED


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
