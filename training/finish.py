"""What a finished run writes (rank 0): ``val.json``, ``eval.json`` with a final ``test`` record in
``metrics.jsonl``, and the plots; and the same plots later from a checkpoint (``python -m training plots``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training import distributed, evaluate
from training.config import TrainConfig, config_from_dict
from training.errors import CheckpointError
from training.evaluate import EvalArrays, EvalResult, describe_test_set, evaluate_arrays
from training.inputs import load_test_data, val_seed
from training.models import TransformerClassifier
from training.reporting import evaluate_validation, log, write_metrics


def finish(
    model: TransformerClassifier,
    config: TrainConfig,
    out: Path,
    device: torch.device,
    history: list[dict[str, Any]],
    wall: float,
    split: Any,
    val_idx: np.ndarray,
) -> EvalResult | None:
    """Final test evaluation (eval.json, a ``test`` record in metrics.jsonl) and the plots."""
    result: EvalResult | None = None
    arrays: EvalArrays | None = None
    rotation: tuple[np.ndarray, np.ndarray] | None = None
    plot_images = split.images[val_idx] if len(val_idx) else split.images
    if len(val_idx):
        write_validation(model, config, out, device, split, val_idx)
    if config.run.final_eval:
        test = load_test_data(config)
        plot_images = test.images
        result, arrays = evaluate_test_set(model, test, config, device, keep_crops=config.run.plots)
        result.checkpoint = str(out / "model.pt")
        result.extra = {"training_wall_time_s": wall}
        if config.data.rotation_deg > 0 and model.config.has_transformer:
            rotation = rotated_test_study(model, test.images, config, device)
            result.extra["rotation"] = evaluate.rotation_summary(
                rotation[0], rotation[1], arrays.pred_perturbed != arrays.labels
            )
        result.write_json(out / "eval.json")
        write_metrics(
            out,
            {
                "test": True,
                "test_error_clean": result.error_clean,
                "test_error_perturbed": result.error_perturbed,
                "num_images": result.num_images,
                "inference_forward": result.inference_forward,
            },
        )
        log(
            f"test error {100 * result.error_clean:.3f}% clean, {100 * result.error_perturbed:.3f}% "
            f"perturbed ({result.num_images} images, inference forward {result.inference_forward})",
            distributed.DistContext(),
        )
    elif len(val_idx):
        _, arrays = evaluate_arrays(
            model,
            split.images[val_idx],
            split.labels[val_idx],
            device=device,
            keep_crops=True,
            seed=config.run.eval_seed,
            rotation_deg=config.data.rotation_deg,
        )
    if config.run.plots:
        try:
            write_plots(out / "plots", history, arrays, config)
            if model.config.has_transformer:
                write_rotation_plot(out / "plots", model, plot_images, config, device, rotation)
        except Exception as exc:  # plots are a by-product: never lose a finished run to them
            log(f"warning: plots skipped: {type(exc).__name__}: {exc}", distributed.DistContext())
    return result


def write_validation(
    model: TransformerClassifier,
    config: TrainConfig,
    out: Path,
    device: torch.device,
    split: Any,
    val_idx: np.ndarray,
) -> EvalResult:
    """The final model on the validation tracks, clean and perturbed, with crop alignment (``val.json``)."""
    source = Path(split.source).name
    test_set = f"validation: {len(val_idx)} images of held-out training tracks ({source})"
    result = evaluate_validation(model, split, val_idx, config, device, test_set)
    result.checkpoint = str(out / "model.pt")
    result.extra = {"val_fraction": config.data.val_fraction, "val_seed": val_seed(config)}
    result.write_json(out / "val.json")
    log(
        f"validation error {100 * result.error_clean:.3f}% clean, "
        f"{100 * result.error_perturbed:.3f}% perturbed"
        + (
            f"; crop IoU median {result.alignment['clean']['iou_median']:.3f} clean, "
            f"{result.alignment['perturbed']['iou_median']:.3f} perturbed"
            if result.alignment
            else ""
        ),
        distributed.DistContext(),
    )
    return result


def write_plots(
    folder: Path, history: list[dict[str, Any]], arrays: EvalArrays | None, config: TrainConfig
) -> None:
    """Training curves, and from an evaluation: class crops (mean/variance) and the confusion matrix."""
    from training import plots
    from training.data import load_class_names, resolve_data_dir

    folder.mkdir(parents=True, exist_ok=True)
    plots.plot_training_curves(history, folder / "training_curves.png")
    if arrays is None:
        return
    names = load_class_names(resolve_data_dir(config.data.data_dir))
    if arrays.crops_perturbed is not None:
        plots.plot_class_crops(arrays.crops_perturbed, arrays.labels, names, folder / "class_crops.png")
    plots.plot_confusion_matrix(arrays.labels, arrays.pred_clean, names, folder / "confusion_matrix.png")


def evaluate_test_set(
    model: TransformerClassifier, test: Any, config: TrainConfig, device: torch.device, *, keep_crops: bool
) -> tuple[EvalResult, EvalArrays]:
    """``evaluate_arrays`` on a loaded test split with the run's protocol (perturbation, seed, rotation)."""
    return evaluate_arrays(
        model,
        test.images,
        test.labels,
        scale=config.data.perturbation_scale,
        translation_scale=config.data.translation_scale,
        seed=config.run.eval_seed,
        device=device,
        keep_crops=keep_crops,
        test_set=describe_test_set(test.source, len(test)),
        rotation_deg=config.data.rotation_deg,
        roi50=test.roi50,
    )


def plots_from_checkpoint(
    checkpoint: str | Path,
    folder: str | Path,
    *,
    data_dir: str | None = None,
    limit: int | None = None,
    device: str = "cpu",
) -> list[Path]:
    """Draw a finished run's plots from its checkpoint (for runs trained with ``--no-plots``).

    The same figures training writes at the end: the training curves from the checkpoint's history, and from
    an evaluation on the test set (the checkpoint's config: perturbation, seed, rotation) the per-class crops,
    the confusion matrix and, for models with a transformer, the angle against the rotation.

    Args:
        checkpoint: a ``model.pt`` (or ``checkpoint.pt``) written by training.
        folder: where the PNG files go (created).
        data_dir: GTSRB folder (default: the checkpoint's, else the usual resolution).
        limit: only the first N test images.
        device: where to run the evaluation.

    Returns:
        the PNG files written.

    Raises:
        CheckpointError: unreadable checkpoint, or one without a training config.
    """
    from training.models import load_checkpoint

    loaded = load_checkpoint(checkpoint, device)
    if loaded.train_config is None:
        raise CheckpointError(f"{checkpoint}: has no training config to draw plots from")
    config = config_from_dict(loaded.train_config)
    data = config.data
    config = dataclasses.replace(
        config,
        data=dataclasses.replace(
            data, data_dir=data_dir or data.data_dir, limit_test=limit, test_variant="lossless"
        ),
    )
    test = load_test_data(config)
    target = torch.device(device)
    _, arrays = evaluate_test_set(loaded.model, test, config, target, keep_crops=True)
    out = Path(folder)
    write_plots(out, list(loaded.payload.get("history", [])), arrays, config)
    if loaded.model.config.has_transformer:
        write_rotation_plot(out, loaded.model, test.images, config, target)
    return sorted(out.glob("*.png"))


def rotated_test_study(
    model: TransformerClassifier, images: np.ndarray, config: TrainConfig, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """``evaluate.rotation_study`` on rotated GTSRB, with the angles of the rotated evaluation.

    The angles are uniform in [-data.rotation_deg, data.rotation_deg], seeded with
    ``evaluate.rotation_seed(run.eval_seed)``, so each point is an image of the rotated test error.

    Returns:
        ``(applied_deg (N,), predicted_deg (N,))``.
    """
    seed = evaluate.rotation_seed(config.run.eval_seed)
    return evaluate.rotation_study(model, images, max_deg=config.data.rotation_deg, seed=seed, device=device)


def write_rotation_plot(
    folder: Path,
    model: TransformerClassifier,
    images: np.ndarray,
    config: TrainConfig,
    device: torch.device,
    rotation: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Finnveden et al.'s Figure 3 for this model: predicted against applied rotation.

    Without ``data.rotation_deg``: up to 1000 images rotated by up to 90 degrees (seed ``run.eval_seed``).
    On rotated GTSRB: the angles of the rotated evaluation on all ``images`` (``rotation``, when already
    computed by :func:`rotated_test_study`).
    """
    from training import plots

    m = config.model
    title = f"{m.model_type} / {m.arch} / {m.warp_type} / {m.sampler}: rotation undone by the transformer"
    if config.data.rotation_deg > 0:
        applied, predicted = rotation or rotated_test_study(model, images, config, device)
        title = (
            f"{m.model_type} / {m.arch} / {m.warp_type} / {m.sampler}, "
            f"rotated GTSRB (+-{config.data.rotation_deg:g} deg)"
        )
    else:
        applied, predicted = evaluate.rotation_study(
            model, images[:1000], seed=config.run.eval_seed, device=device
        )
    return plots.plot_angle_vs_rotation(applied, predicted, folder / "angle_vs_rotation.png", title)
