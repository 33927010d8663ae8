"""The training loop: the IC-STN protocol on GTSRB, single process or torchrun/DDP.

Each batch gets fresh perturbation warps (``geometry.perturbation_warps``) and the model sees
``model(image, init_warp)``; validation images are held out by physical sign track. Rank 0 writes, under
``run.out``: ``config.json`` (the resolved config), ``metrics.jsonl`` (one JSON object per epoch, plus a final
``test`` record), ``checkpoint.pt`` (every epoch, for ``--resume``), ``model.pt`` (the final model),
``eval.json`` (the final test evaluation) and ``plots/*.png``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training import alignment, augment, distributed, evaluate, geometry
from training.config import TrainConfig, config_from_dict
from training.errors import CheckpointError, ConfigError, TrainingError
from training.evaluate import EvalArrays, EvalResult, describe_test_set, evaluate_arrays
from training.models import TransformerClassifier, build_model, count_parameters, save_checkpoint
from training.models.checkpoint import read_checkpoint


@dataclass
class TrainResult:
    """What a finished run produced.

    Attributes:
        out_dir: the output folder.
        model_path: the final checkpoint (``model.pt``).
        history: one dict per epoch (the metrics.jsonl records).
        steps: optimizer steps taken in total.
        wall_time_s: training time in seconds (over all resumed segments).
        eval: the final test evaluation, when run.
        model: the trained model (unwrapped from DDP), in train mode.
    """

    out_dir: Path
    model_path: Path
    history: list[dict[str, Any]]
    steps: int
    wall_time_s: float
    eval: EvalResult | None = None
    model: TransformerClassifier | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without CUDA raises ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device = 'cuda' but no CUDA device is available")
    return torch.device(name)


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
            f"{ips:7.1f} img/s ETA {_format_duration(eta)}"
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


def _format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def log(message: str, ctx: distributed.DistContext) -> None:
    """One line on stderr from rank 0."""
    if ctx.is_main:
        print(message, file=sys.stderr, flush=True)


def load_training_data(config: TrainConfig) -> Any:
    """The training split (a ``GtsrbSplit``).

    With ``data.limit_train`` it is a seeded random subset of that many rows (drawn from the whole set, so
    every class appears; from packed arrays only those rows are decoded).
    """
    from training.data import load_gtsrb, load_packed, resolve_data_dir
    from training.data.load import packed_file

    data_dir = resolve_data_dir(config.data.data_dir)
    cache = Path(config.data.cache_dir) if config.data.cache_dir else None
    limit = config.data.limit_train
    rng = np.random.default_rng(config.run.seed)
    packed = packed_file(data_dir, "train", cast(Any, config.data.train_variant))
    if limit is not None and packed is not None:
        with np.load(packed, allow_pickle=False) as z:
            total = int(z["labels"].shape[0])
        if limit < total:
            rows = np.sort(rng.choice(total, limit, replace=False))
            return load_packed(packed, rows=rows, cache_dir=cache)
    split = load_gtsrb(data_dir, "train", variant=cast(Any, config.data.train_variant), cache_dir=cache)
    if limit is not None and limit < len(split):
        split = split.subset(np.sort(rng.choice(len(split), limit, replace=False)))
    return split


def load_test_data(config: TrainConfig) -> Any:
    """The test split (lossless by default), the first ``data.limit_test`` images when set."""
    from training.data import load_gtsrb, resolve_data_dir

    data_dir = resolve_data_dir(config.data.data_dir)
    cache = Path(config.data.cache_dir) if config.data.cache_dir else None
    return load_gtsrb(
        data_dir,
        "test",
        variant=cast(Any, config.data.test_variant),
        limit=config.data.limit_test,
        cache_dir=cache,
    )


def split_train_val(split: Any, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation row indices, by physical sign track (``data.split_by_track``)."""
    from training.data import split_by_track

    n = len(split)
    if config.data.val_fraction == 0 or split.track_uid is None:
        return np.arange(n), np.arange(0)
    return split_by_track(split.track_uid, config.data.val_fraction, _val_seed(config))


def _alignment_boxes(split: Any, config: TrainConfig) -> torch.Tensor:
    """(N, 4) float32 annotated sign boxes of the training split (alignment loss, ``target="roi"``)."""
    if config.optim.align_target != "roi":
        return torch.zeros(len(split), 4)
    if split.roi50 is None:
        raise ConfigError(
            f"optim.align_weight = {config.optim.align_weight} with align_target = 'roi' needs the annotated "
            f"sign boxes (roi50), which {split.source} does not carry: use the packed GTSRB arrays"
        )
    return torch.from_numpy(np.ascontiguousarray(split.roi50))


def build_optimizer(model: TransformerClassifier, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam / AdamW / SGD with two parameter groups: classifier (lr) and localisation (lr * loc_lr_scale)."""
    o = config.optim
    loc_ids = {id(p) for p in model.localisation_parameters()}
    rest = [p for p in model.parameters() if id(p) not in loc_ids]
    groups: list[dict[str, Any]] = [{"params": rest, "lr": o.lr, "name": "classifier"}]
    if loc_ids:
        groups.append(
            {"params": model.localisation_parameters(), "lr": o.lr * o.loc_lr_scale, "name": "localisation"}
        )
    if o.optimizer == "adam":
        return torch.optim.Adam(groups, lr=o.lr, weight_decay=o.weight_decay)
    if o.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=True, weight_decay=o.weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step schedule: cosine (linear warm-up then cosine to 0), one-cycle, or constant."""
    o = config.optim
    total = max(1, total_steps)
    if o.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total + 1
        )
    warmup = min(total - 1, int(o.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if o.schedule == "constant":
            return 1.0
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def _autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    if device.type != "cuda" or not amp:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _epoch_order(n: int, seed: int, epoch: int, ctx: distributed.DistContext) -> np.ndarray:
    """This rank's shuffled row order for an epoch (every rank gets the same number of rows)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    per_rank = n // ctx.world_size if ctx.world_size > 1 else n
    return order[ctx.rank :: ctx.world_size][:per_rank]


def _write_metrics(out: Path, record: dict[str, Any]) -> None:
    with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def train(config: TrainConfig, *, progress_stream: TextIO | None = None) -> TrainResult:
    """Run the IC-STN training protocol described by ``config`` (see the module docstring for the outputs).

    Raises:
        TrainingError subclasses for bad data, config or checkpoints (the CLI prints them as one line).
    """
    start_wall = time.perf_counter()
    device = resolve_device(config.run.device)
    ctx = distributed.setup(device.type)
    try:
        return _train(config, device, ctx, start_wall, progress_stream)
    finally:
        distributed.cleanup(ctx)


def _train(
    config: TrainConfig,
    device: torch.device,
    ctx: distributed.DistContext,
    start_wall: float,
    progress_stream: TextIO | None,
) -> TrainResult:
    if device.type == "cuda" and ctx.enabled:
        device = torch.device("cuda", ctx.local_rank)
    if config.run.threads is not None:
        torch.set_num_threads(config.run.threads)
    out = Path(config.run.out)
    _seed_everything(config.run.seed + ctx.rank)

    split = load_training_data(config)
    train_idx, val_idx = split_train_val(split, config)
    images = torch.from_numpy(split.images).permute(0, 3, 1, 2).contiguous()  # (N, 3, 50, 50) uint8
    labels = torch.from_numpy(split.labels)
    align_weight = config.optim.align_weight if config.model.has_transformer else 0.0
    roi50 = _alignment_boxes(split, config) if align_weight > 0 else None
    if device.type == "cuda":
        images, labels = images.to(device), labels.to(device)

    model = build_model(config.model)
    lineage: dict[str, Any] | None = None  # what a fine-tuning run started from (kept across resumes)
    if config.run.init_from:
        lineage = init_weights(model, config.run.init_from, config)
        log(f"starting from the weights of {config.run.init_from}", ctx)
    model = model.to(device)
    optimizer = build_optimizer(model, config)
    batch = config.optim.batch_size
    per_rank = len(train_idx) // ctx.world_size
    steps_per_epoch = max(1, per_rank // batch)
    total_steps = steps_per_epoch * config.optim.epochs
    if config.run.max_steps is not None:
        total_steps = min(total_steps, config.run.max_steps)
    scheduler = build_scheduler(optimizer, config, total_steps, steps_per_epoch)
    pert_gen = torch.Generator().manual_seed(config.run.seed * 7919 + 17 + ctx.rank)
    aug_gen = torch.Generator().manual_seed(config.run.seed * 104729 + 31 + ctx.rank)
    photometric = photometric_spec(config)
    ema = build_ema(model, config.optim.ema_decay)

    history: list[dict[str, Any]] = []
    start_epoch, step, prior_wall = 0, 0, 0.0
    if config.run.resume:
        start_epoch, step, history, prior_wall, lineage = _resume(
            config.run.resume, model, optimizer, scheduler, (pert_gen, aug_gen), config, ema
        )
        log(f"resumed from {config.run.resume} at epoch {start_epoch}, step {step}", ctx)

    ddp_model = distributed.wrap_model(model, ctx, device)
    amp_dtype = _autocast_dtype(device, config.run.amp)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(config.to_json() + "\n", encoding="utf-8")
        if not config.run.resume and (out / "metrics.jsonl").exists():
            (out / "metrics.jsonl").unlink()
    log(
        f"training {config.model.model_type}/{config.model.arch} ({config.model.warp_type}, sampler "
        f"{config.model.sampler}, r={config.model.downsampling_rate}, {count_parameters(model):,} params) "
        f"on {device} x{ctx.world_size}: {len(train_idx)} train / {len(val_idx)} val images, "
        f"{steps_per_epoch} steps/epoch, {total_steps} steps",
        ctx,
    )

    progress = Progress(total_steps, config.run.log_every, progress_stream, enabled=ctx.is_main)
    bad_steps = 0
    seg_start, seg_step0 = time.perf_counter(), step
    for epoch in range(start_epoch, config.optim.epochs):
        if step >= total_steps:
            break
        ddp_model.train()
        order = train_idx[_epoch_order(len(train_idx), config.run.seed, epoch, ctx)]
        sums = torch.zeros(3, dtype=torch.float64)  # loss*n, wrong, n
        epoch_start = time.perf_counter()
        for b in range(steps_per_epoch):
            if step >= total_steps:
                break
            rows = torch.from_numpy(order[b * batch : (b + 1) * batch]).to(images.device)
            x = images[rows].to(device, non_blocking=True).float()
            x = augment.photometric(x, photometric, aug_gen)
            y = labels[rows].to(device, non_blocking=True)
            init = geometry.perturbation_warps(
                x.shape[0],
                scale=config.data.perturbation_scale,
                translation_scale=config.data.translation_scale,
                generator=pert_gen,
                dtype=torch.float32,
            )
            if config.data.rotation_deg > 0:  # rotated GTSRB: rotate the frames' pixels, then perturb
                rotations, _ = geometry.random_rotations(
                    x.shape[0], config.data.rotation_deg, generator=pert_gen
                )
                x = geometry.rotate_frames(x, rotations)
            init = init.to(device)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                output = ddp_model(x, init)
                loss = F.cross_entropy(output.logits.float(), y, label_smoothing=config.optim.label_smoothing)
                if align_weight > 0:
                    targets = alignment.target_corners(
                        None if roi50 is None else roi50[rows.cpu()],
                        config.optim.align_target,
                        config.optim.align_margin_px,
                        x.shape[0],
                    )
                    loss = loss + align_weight * alignment.alignment_loss(output.warp, targets)
            if _non_finite(loss, ctx):
                bad_steps += 1
                if ctx.enabled or bad_steps >= MAX_BAD_STEPS:
                    raise TrainingError(
                        f"the loss is not finite at step {step + 1} ({bad_steps} bad batches in a row); "
                        "lower optim.lr or optim.loc_lr_scale, or set optim.grad_clip"
                    )
                log(f"warning: non-finite loss at step {step + 1}, batch skipped", ctx)
                continue
            bad_steps = 0
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if config.optim.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            with torch.no_grad():
                wrong = (output.logits.argmax(1) != y).sum().item()
            sums += torch.tensor([loss.item() * x.shape[0], wrong, x.shape[0]], dtype=torch.float64)
            elapsed = time.perf_counter() - seg_start
            ips = (step - seg_step0) * batch * ctx.world_size / max(elapsed, 1e-9)
            eta = (total_steps - step) * batch * ctx.world_size / max(ips, 1e-9)
            progress.update(
                step,
                epoch,
                config.optim.epochs,
                sums[0].item() / sums[2].item(),
                sums[1].item() / sums[2].item(),
                ips,
                eta,
            )
        sums = distributed.all_reduce_sum(sums, ctx)
        record = _epoch_record(epoch, step, sums, optimizer, time.perf_counter() - epoch_start, ctx)
        if ctx.is_main and len(val_idx):
            val, _ = evaluate_arrays(
                averaged(model, ema),
                split.images[val_idx],
                split.labels[val_idx],
                scale=config.data.perturbation_scale,
                translation_scale=config.data.translation_scale,
                seed=config.run.eval_seed,
                device=device,
                test_set="validation",
                rotation_deg=config.data.rotation_deg,
                roi50=None if split.roi50 is None else split.roi50[val_idx],
            )
            record["val_error_clean"] = val.error_clean
            record["val_error_perturbed"] = val.error_perturbed
            if val.alignment is not None:
                record["val_iou_median_clean"] = val.alignment["clean"]["iou_median"]
                record["val_iou_median_perturbed"] = val.alignment["perturbed"]["iou_median"]
                record["val_outside_clean"] = val.alignment["clean"]["share_outside_gt_10pct"]
        record["elapsed_s"] = prior_wall + time.perf_counter() - start_wall
        history.append(record)
        if ctx.is_main:
            progress.close()
            _write_metrics(out, record)
            log(_format_record(record), ctx)
            save_checkpoint(
                out / "checkpoint.pt",
                model,
                train_config=config.to_dict(),
                extra=_train_state(
                    epoch + 1,
                    step,
                    history,
                    optimizer,
                    scheduler,
                    (pert_gen, aug_gen),
                    record["elapsed_s"],
                    ema,
                )
                | _lineage_entry(lineage),
            )
        distributed.barrier(ctx)
    progress.close()

    wall = prior_wall + time.perf_counter() - start_wall
    if ema is not None:  # the saved, evaluated and exported model is the average
        model.load_state_dict(averaged(model, ema).state_dict())
    model_path = out / "model.pt"
    result = TrainResult(out, model_path, history, step, wall, model=model)
    if ctx.is_main:
        save_checkpoint(
            model_path,
            model,
            train_config=config.to_dict(),
            extra={
                "epoch": len(history),
                "step": step,
                "history": history,
                "wall_time_s": wall,
                "device": str(device),
                "world_size": ctx.world_size,
                "torch_version": str(torch.__version__),
            }
            | _lineage_entry(lineage),
        )
        log(f"wrote {model_path} ({_format_duration(wall)} wall time)", ctx)
        if config.run.final_eval or config.run.plots or len(val_idx):
            result.eval = _finish(model, config, out, device, history, wall, split, val_idx)
    distributed.barrier(ctx)
    return result


MAX_BAD_STEPS = 10
"""Consecutive batches with a non-finite loss a single process skips before it stops with a TrainingError."""


def _non_finite(loss: torch.Tensor, ctx: distributed.DistContext) -> bool:
    """True when the loss is NaN/inf on this process (under DDP: on any process, so all ranks agree)."""
    bad = torch.tensor([0.0 if bool(torch.isfinite(loss.detach())) else 1.0])
    return bool(distributed.all_reduce_sum(bad, ctx).item() > 0)


def _epoch_record(
    epoch: int,
    step: int,
    sums: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    seconds: float,
    ctx: distributed.DistContext,
) -> dict[str, Any]:
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


def _format_record(record: dict[str, Any]) -> str:
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


def photometric_spec(config: TrainConfig) -> augment.PhotometricSpec:
    """The photometric augmentation the data config asks for (all off by default)."""
    data = config.data
    return augment.PhotometricSpec(
        color_jitter=data.color_jitter,
        blur_prob=data.blur_prob,
        blur_max_sigma=data.blur_max_sigma,
        noise_std=data.noise_std,
        exposure_jitter=data.exposure_jitter,
        saturation_jitter=data.saturation_jitter,
        shadow_prob=data.shadow_prob,
        shadow_min_gain=data.shadow_min_gain,
    )


def build_ema(model: nn.Module, decay: float | None) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of ``model``'s parameters and buffers (None when ``decay`` is None)."""
    if decay is None:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def averaged(
    model: TransformerClassifier, ema: torch.optim.swa_utils.AveragedModel | None
) -> TransformerClassifier:
    """The model to evaluate: the moving average when there is one, else ``model`` itself."""
    if ema is None:
        return model
    return cast(TransformerClassifier, ema.module)


def _train_state(
    epoch: int,
    step: int,
    history: list[dict[str, Any]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generators: tuple[torch.Generator, torch.Generator],
    wall: float,
    ema: torch.optim.swa_utils.AveragedModel | None = None,
) -> dict[str, Any]:
    state = {
        "epoch": epoch,
        "step": step,
        "history": history,
        "optimizer_state": optimizer.state_dict(),
        "scheduler_state": scheduler.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "perturbation": generators[0].get_state(),
            "augment": generators[1].get_state(),
        },
        "wall_time_s": wall,
    }
    if ema is not None:
        state["ema_state"] = ema.state_dict()
    return state


#: Model-config fields that may differ between a fine-tuning run and the checkpoint it starts from (they
#: change how the sampler behaves, not which weights exist).
_FINE_TUNE_FREE = ("sampler", "eval_forward", "num_samples", "dropout")


def init_weights(model: TransformerClassifier, path: str, config: TrainConfig) -> dict[str, Any]:
    """Load the weights of the checkpoint at ``path`` into ``model`` (``run.init_from``, fine-tuning).

    The checkpoint's model config must equal ``config.model`` except for :data:`_FINE_TUNE_FREE`; only the
    weights are taken (a ``model.pt`` of an EMA run holds the averaged ones), not the optimizer or step.

    Returns:
        the lineage the fine-tuned checkpoints record as ``fine_tuned_from`` (and export copies into the model
        card): the start checkpoint's path, sha256, epochs, wall time in seconds, training config and its
        own ``fine_tuned_from`` (None for a run from scratch).

    Raises:
        CheckpointError: unreadable file, another architecture, or weights that do not fit.
    """
    from training.models import load_checkpoint

    loaded = load_checkpoint(path)  # one-line CheckpointErrors for a missing, corrupt or unfitting file
    mine, theirs = asdict(config.model), asdict(loaded.model_config)
    differ = [k for k in mine if k not in _FINE_TUNE_FREE and mine[k] != theirs[k]]
    if differ:
        shown = ", ".join(f"{k} {theirs[k]!r} vs {mine[k]!r}" for k in differ)
        raise CheckpointError(f"{path}: another architecture than this run's model config ({shown})")
    model.load_state_dict(loaded.model.state_dict())  # same architecture: the same parameters and buffers
    payload = loaded.payload
    return {
        "path": str(path),
        "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
        "epochs": payload.get("epoch"),
        "wall_time_s": payload.get("wall_time_s"),
        "train_config": payload.get("train_config"),
        "fine_tuned_from": payload.get("fine_tuned_from"),
    }


def _lineage_entry(lineage: dict[str, Any] | None) -> dict[str, Any]:
    """The checkpoint entry that records a fine-tuning run's start (empty for a run from scratch)."""
    return {} if lineage is None else {"fine_tuned_from": lineage}


def _resume(
    path: str,
    model: TransformerClassifier,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generators: tuple[torch.Generator, torch.Generator],
    config: TrainConfig,
    ema: torch.optim.swa_utils.AveragedModel | None = None,
) -> tuple[int, int, list[dict[str, Any]], float, dict[str, Any] | None]:
    payload = read_checkpoint(path)
    for key in ("optimizer_state", "scheduler_state", "epoch", "step", "rng"):
        if key not in payload:
            raise CheckpointError(f"{path}: not a resumable checkpoint (no {key!r}; use out/checkpoint.pt)")
    stored = payload.get("train_config")
    if stored is not None and config_from_dict(stored).model != config.model:
        raise CheckpointError(f"{path}: its model config differs from this run's model config")
    try:
        model.load_state_dict(payload["model_state"])
        optimizer.load_state_dict(payload["optimizer_state"])
        scheduler.load_state_dict(payload["scheduler_state"])
        torch.set_rng_state(payload["rng"]["torch"])
        generators[0].set_state(payload["rng"]["perturbation"])
        if "augment" in payload["rng"]:
            generators[1].set_state(payload["rng"]["augment"])
        if ema is not None:
            if "ema_state" not in payload:
                raise CheckpointError(f"{path}: was trained without optim.ema_decay; cannot resume with it")
            ema.load_state_dict(payload["ema_state"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: cannot resume: {exc}") from None
    return (
        int(payload["epoch"]),
        int(payload["step"]),
        list(payload.get("history", [])),
        float(payload.get("wall_time_s", 0.0)),
        payload.get("fine_tuned_from"),
    )


def _finish(
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
        _write_metrics(
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
    result, _ = evaluate_arrays(
        model,
        split.images[val_idx],
        split.labels[val_idx],
        scale=config.data.perturbation_scale,
        translation_scale=config.data.translation_scale,
        seed=config.run.eval_seed,
        device=device,
        test_set=f"validation: {len(val_idx)} images of held-out training tracks ({Path(split.source).name})",
        rotation_deg=config.data.rotation_deg,
        roi50=None if split.roi50 is None else split.roi50[val_idx],
    )
    result.checkpoint = str(out / "model.pt")
    result.extra = {"val_fraction": config.data.val_fraction, "val_seed": _val_seed(config)}
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


def _val_seed(config: TrainConfig) -> int:
    return config.run.seed if config.data.val_seed is None else config.data.val_seed


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


def main_entry(config: TrainConfig) -> int:
    """Run training (``python -m training train``); returns the exit status."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    train(config)
    return 0
