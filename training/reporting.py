"""What a run says while it trains: the progress line, one record per epoch (``metrics.jsonl``) and its log.

Rank 0 reports; the other ranks stay quiet (:func:`log`). The final evaluation, ``val.json`` and the plots
are :mod:`training.finish`'s.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from training import distributed
from training.config import TrainConfig
from training.evaluate import EvalResult, evaluate_arrays
from training.models import TransformerClassifier


class Progress:
    """One progress line (loss, error, images/s, ETA) on stderr.

    On a TTY it rewrites the line in place at most 4 times a second; otherwise it prints one line every
    ``every`` steps, so logs are not flooded.
    """

    def __init__(
        self, total_steps: int, every: int, stream: TextIO | None = None, enabled: bool = True
    ) -> None:
        self.total = total_steps
        self.every = every
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.last = 0.0

    def update(
        self, step: int, epoch: int, epochs: int, loss: float, error: float, ips: float, eta: float
    ) -> None:
        """Report the state after optimizer step ``step`` (1-based, global)."""
        if not self.enabled:
            return
        now = time.monotonic()
        due = (now - self.last > 0.25 or step == self.total) if self.tty else (step % self.every == 0)
        if not due:
            return
        self.last = now
        line = (
            f"epoch {epoch + 1}/{epochs} step {step}/{self.total} loss {loss:.4f} err {100 * error:5.2f}% "
            f"{ips:7.1f} img/s ETA {format_duration(eta)}"
        )
        if self.tty:
            self.stream.write("\r" + line.ljust(100))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the in-place line on a TTY."""
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` (``?`` for a non-finite duration)."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def log(message: str, ctx: distributed.DistContext) -> None:
    """One line on stderr from rank 0."""
    if ctx.is_main:
        print(message, file=sys.stderr, flush=True)


def write_metrics(out: Path, record: dict[str, Any]) -> None:
    """Append one record to ``out/metrics.jsonl``."""
    with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def epoch_record(
    epoch: int,
    step: int,
    sums: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    seconds: float,
    ctx: distributed.DistContext,
) -> dict[str, Any]:
    """The training figures of one epoch from ``sums`` = (loss * n, wrong, n) over all ranks."""
    n = max(sums[2].item(), 1.0)
    return {
        "epoch": epoch + 1,
        "step": step,
        "train_loss": sums[0].item() / n,
        "train_error": sums[1].item() / n,
        "lr": optimizer.param_groups[0]["lr"],
        "images": int(sums[2].item()),
        "images_per_s": sums[2].item() / max(seconds, 1e-9),
        "epoch_time_s": seconds,
        "world_size": ctx.world_size,
    }


def evaluate_validation(
    model: TransformerClassifier,
    split: Any,
    val_idx: np.ndarray,
    config: TrainConfig,
    device: torch.device,
    test_set: str = "validation",
) -> EvalResult:
    """The model on the validation tracks ``val_idx`` of ``split``, clean and perturbed, with the run's
    protocol (perturbation, seed, rotation) and the crop alignment when the split carries the annotated boxes.
    """
    result, _ = evaluate_arrays(
        model,
        split.images[val_idx],
        split.labels[val_idx],
        scale=config.data.perturbation_scale,
        translation_scale=config.data.translation_scale,
        seed=config.run.eval_seed,
        device=device,
        test_set=test_set,
        rotation_deg=config.data.rotation_deg,
        roi50=None if split.roi50 is None else split.roi50[val_idx],
    )
    return result


def evaluate_checkpoint_on_validation(
    checkpoint: str | Path,
    *,
    data_dir: str | Path | None = None,
    device: str = "cpu",
    threads: int | None = None,
) -> EvalResult:
    """A checkpoint on the validation tracks of its own training config (``evaluate --split validation``).

    The split is rebuilt from the checkpoint's ``data.val_fraction`` and ``data.val_seed`` (else
    ``run.seed``) over the full training file, so a raw ``checkpoint.pt`` and the run's averaged ``model.pt``
    can be compared on the same images as the run's ``val.json``.

    Raises:
        ConfigError: the checkpoint was trained without a validation split.
    """
    from dataclasses import replace

    from training.config import config_from_dict
    from training.errors import ConfigError
    from training.inputs import load_training_data, split_train_val, val_seed
    from training.models import load_checkpoint

    if threads is not None:
        torch.set_num_threads(threads)
    loaded = load_checkpoint(checkpoint, map_location=device)
    config = config_from_dict(loaded.train_config or {})
    if config.data.val_fraction == 0:
        raise ConfigError(f"{checkpoint}: trained without a validation split (data.val_fraction = 0)")
    data = replace(config.data, data_dir=None if data_dir is None else str(data_dir))
    config = replace(config, data=data)
    split = load_training_data(config)
    _, val_idx = split_train_val(split, config)
    result = evaluate_validation(
        loaded.model,
        split,
        val_idx,
        config,
        torch.device(device),
        test_set=f"validation: {len(val_idx)} images of held-out training tracks ({Path(split.source).name})",
    )
    result.checkpoint = str(checkpoint)
    result.extra = {"val_fraction": config.data.val_fraction, "val_seed": val_seed(config)}
    return result


def validation_figures(
    model: TransformerClassifier, split: Any, val_idx: np.ndarray, config: TrainConfig, device: torch.device
) -> dict[str, Any]:
    """The epoch record's validation entries (:func:`evaluate_validation`): clean and perturbed error, and the
    crop alignment when measured."""
    val = evaluate_validation(model, split, val_idx, config, device)
    record = {"val_error_clean": val.error_clean, "val_error_perturbed": val.error_perturbed}
    if val.alignment is not None:
        record["val_iou_median_clean"] = val.alignment["clean"]["iou_median"]
        record["val_iou_median_perturbed"] = val.alignment["perturbed"]["iou_median"]
        record["val_outside_clean"] = val.alignment["clean"]["share_outside_gt_10pct"]
    return record


def format_record(record: dict[str, Any]) -> str:
    """The log line of an epoch record."""
    parts = [
        f"epoch {record['epoch']}",
        f"train loss {record['train_loss']:.4f}",
        f"train err {100 * record['train_error']:.2f}%",
    ]
    if "val_error_clean" in record:
        parts.append(f"val err {100 * record['val_error_clean']:.2f}% clean")
        parts.append(f"{100 * record['val_error_perturbed']:.2f}% perturbed")
    parts.append(f"{record['images_per_s']:.0f} img/s")
    return ", ".join(parts)
