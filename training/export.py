"""Export a checkpoint as a model bundle: ``model.onnx`` + ``model.json`` (docs/model-bundle.md, schema 1).

The export fails loudly (:class:`ExportError`) unless ``onnx.checker`` accepts the graph and onnxruntime
matches torch on real GTSRB test images (logits and warp within 1e-4, at batch size 1 and at a larger batch).
The bundle's test errors come from an evaluation that used the same inference forward as the graph: either
``--metrics eval.json`` (written by ``evaluate --json`` or by training) or an evaluation run here.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from service.contract import INPUT_NAME, OUTPUT_NAMES, SCHEMA_VERSION, CardError, make_card, sha256_file
from training.conventions import CROP_BOX, FRAME_SIZE, RESIZE_METHOD
from training.errors import ExportError
from training.evaluate import EvalResult, evaluate_checkpoint, inference_forward_of
from training.models import ExportModule, count_parameters, load_checkpoint

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAMES",
    "SCHEMA_VERSION",
    "ExportModule",
    "ExportReport",
    "build_card",
    "check_onnx",
    "check_parity",
    "export_bundle",
    "export_onnx",
    "fine_tuning_lineage",
    "load_metrics",
    "mark_default",
    "sha256_file",
]

DEFAULT_OPSET = 17
PARITY_ATOL = 1e-4
CROP_ATOL = 1e-2  # 0..255 scale


@dataclass
class ExportReport:
    """What :func:`export_bundle` wrote and measured."""

    bundle_dir: Path
    onnx_path: Path
    json_path: Path
    sha256: str
    max_abs_diff: dict[str, float]
    card: dict[str, Any]


def export_onnx(module: ExportModule, path: Path, opset: int = DEFAULT_OPSET) -> None:
    """``torch.onnx.export`` (TorchScript exporter, ``dynamo=False``) with a dynamic batch dimension.

    Graph: input ``image`` (N, 3, 50, 50) float32 0..255; outputs ``logits`` (N, K), ``warp`` (N, 3, 3) in the
    50x50 pixel frame, ``crop`` (N, 3, S, S) 0..255.
    """
    module.eval()
    dummy = torch.zeros(2, 3, FRAME_SIZE, FRAME_SIZE)
    dynamic = {name: {0: "N"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    try:
        with warnings.catch_warnings():
            # shape checks in the models are constants for a traced graph with a fixed 50x50 input
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # strided slices (the sampler's prefilter) are left unfolded: harmless, the graph stays correct
            warnings.filterwarnings("ignore", message="Constant folding - Only steps=1", category=UserWarning)
            torch.onnx.export(
                module,
                (dummy,),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                dynamic_axes=dynamic,
                do_constant_folding=True,
            )
    except Exception as exc:  # the exporter raises many types
        raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {exc}") from None


def check_onnx(path: Path) -> None:
    """``onnx.checker.check_model`` with full shape inference; ExportError on failure."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise ExportError(f"onnx.checker rejected {path.name}: {exc}") from None


def check_parity(
    module: ExportModule, onnx_path: Path, images: np.ndarray, *, atol: float = PARITY_ATOL
) -> dict[str, float]:
    """Compare onnxruntime (CPU) with torch on real images, at batch size 1 and at ``len(images)``.

    Args:
        module: the export module (eval mode).
        onnx_path: the exported graph.
        images: (N, 50, 50, 3) uint8 RGB test images, N >= 2.
        atol: largest allowed absolute difference of logits and warp (crop: 1e-2 on the 0..255 scale).

    Returns:
        the largest absolute difference per output.

    Raises:
        ExportError: a difference above tolerance, a wrong shape, or an onnxruntime failure.
    """
    import onnxruntime as ort

    if images.shape[0] < 2:
        raise ExportError("parity check needs at least 2 test images")
    x_all = np.ascontiguousarray(images.transpose(0, 3, 1, 2)).astype(np.float32)
    try:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"onnxruntime cannot load {onnx_path.name}: {exc}") from None
    worst = dict.fromkeys(OUTPUT_NAMES, 0.0)
    module.eval()
    for x in (x_all[:1], x_all):
        with torch.no_grad():
            expected = [t.numpy() for t in module(torch.from_numpy(x))]
        try:
            got = session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
        except Exception as exc:
            raise ExportError(f"onnxruntime failed on a batch of {x.shape[0]}: {exc}") from None
        for name, e, g in zip(OUTPUT_NAMES, expected, got, strict=True):
            if e.shape != g.shape:
                raise ExportError(f"output {name}: onnxruntime shape {g.shape} != torch shape {e.shape}")
            diff = float(np.max(np.abs(e - g))) if e.size else 0.0
            if not np.isfinite(diff):
                raise ExportError(f"output {name}: non-finite values (batch {x.shape[0]})")
            worst[name] = max(worst[name], diff)
    for name, tol in (("logits", atol), ("warp", atol), ("crop", CROP_ATOL)):
        if worst[name] > tol:
            raise ExportError(
                f"onnxruntime and torch differ on {name}: max |diff| {worst[name]:.3g} > {tol:g} "
                f"(real GTSRB test images, batch sizes 1 and {x_all.shape[0]})"
            )
    return worst


def load_metrics(path: str | Path) -> EvalResult:
    """Read an ``eval.json`` (from ``evaluate --json`` or training) back into an :class:`EvalResult`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return EvalResult(**data)
    except FileNotFoundError:
        raise ExportError(f"metrics file not found: {path}") from None
    except (OSError, ValueError, TypeError) as exc:
        raise ExportError(f"cannot read metrics file {path}: {exc}") from None


def build_card(
    *,
    name: str,
    version: str,
    description: str,
    loaded: Any,
    metrics: EvalResult,
    class_names: list[str],
    sha256: str,
    opset: int,
    validation: EvalResult | None = None,
) -> dict[str, Any]:
    """The model.json dict of docs/model-bundle.md (schema version 1), built and validated by the contract.

    ``metrics`` are the test figures; ``validation`` (optional) the figures on the held-out training tracks
    the recipe was chosen on. Each carries its crop-alignment summary when measured.

    Raises:
        ExportError: the card does not match the contract (:func:`service.contract.make_card`).
    """
    cfg = loaded.model_config
    payload = loaded.payload
    model = loaded.model
    sampler_options: dict[str, Any] = {"num_samples": cfg.num_samples} if cfg.sampler == "linearized" else {}
    if cfg.sampler == "linearized":
        sampler_options["eval_forward"] = cfg.eval_forward
    sampler = {"train": cfg.sampler, "inference": inference_forward_of(model), "options": sampler_options}
    if len(class_names) < cfg.num_classes:
        raise ExportError(f"{len(class_names)} class names for a model of {cfg.num_classes} classes")
    try:
        return make_card(
            name=name,
            version=version,
            created=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
            description=description,
            model_type=cfg.model_type,
            arch=cfg.arch,
            warp_type=cfg.warp_type,
            sampler=sampler,
            downsampling_rate=cfg.downsampling_rate,
            class_names=class_names[: cfg.num_classes],
            resize=RESIZE_METHOD,
            box=CROP_BOX,
            crop_side=cfg.crop_size,
            onnx_sha256=sha256,
            opset=opset,
            metrics={
                "test_set": metrics.test_set,
                "num_images": metrics.num_images,
                "test_error_clean": metrics.error_clean,
                "test_error_perturbed": metrics.error_perturbed,
                "perturbation": dict(metrics.perturbation),
                "inference_forward": metrics.inference_forward,
                "num_parameters": count_parameters(model),
            }
            | _alignment_entry(metrics)
            | _validation_entry(validation),
            training={
                "config": loaded.train_config or {},
                "device": payload.get("device"),
                "wall_time_s": payload.get("wall_time_s"),
                "epochs": payload.get("epoch"),
                "torch_version": str(payload.get("torch_version", torch.__version__)),
            }
            | fine_tuning_lineage(payload),
        )
    except CardError as exc:
        raise ExportError(f"the model card does not match the bundle contract: {exc}") from None


def _alignment_summary(result: EvalResult) -> dict[str, Any] | None:
    """The clean and perturbed crop-alignment figures of a result without their per-class lists."""
    if not result.alignment:
        return None
    return {
        key: {k: v for k, v in result.alignment[key].items() if k != "per_class"}
        for key in ("clean", "perturbed")
    } | {"reference": result.alignment.get("reference")}


def _alignment_entry(result: EvalResult) -> dict[str, Any]:
    summary = _alignment_summary(result)
    return {} if summary is None else {"alignment": summary}


def _validation_entry(validation: EvalResult | None) -> dict[str, Any]:
    """``{"validation": ...}``: the validation split's figures (separate from the test figures), or ``{}``."""
    if validation is None:
        return {}
    entry: dict[str, Any] = {
        "set": validation.test_set,
        "num_images": validation.num_images,
        "error_clean": validation.error_clean,
        "error_perturbed": validation.error_perturbed,
        "split": dict(validation.extra),
    }
    summary = _alignment_summary(validation)
    if summary is not None:
        entry["alignment"] = summary
    return {"validation": entry}


def fine_tuning_lineage(payload: dict[str, Any]) -> dict[str, Any]:
    """``{"fine_tuned_from": lineage}`` for a fine-tuned checkpoint (``run.init_from``), else ``{}``.

    The lineage keeps the start checkpoint's sha256, epochs and wall time (recursively, for a chain of
    fine-tunings) but not its full training config, which the card would otherwise repeat at every level.
    """
    lineage = payload.get("fine_tuned_from")
    if not isinstance(lineage, dict):
        return {}

    def trim(entry: dict[str, Any]) -> dict[str, Any]:
        out = {k: entry.get(k) for k in ("path", "sha256", "epochs", "wall_time_s")}
        parent = entry.get("fine_tuned_from")
        out["fine_tuned_from"] = trim(parent) if isinstance(parent, dict) else None
        return out

    return {"fine_tuned_from": trim(lineage)}


def export_bundle(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    name: str | None = None,
    version: str = "1.0.0",
    description: str = "",
    metrics: str | Path | EvalResult | None = None,
    validation: str | Path | EvalResult | None = None,
    data_dir: str | Path | None = None,
    limit: int | None = None,
    parity_images: int = 8,
    opset: int = DEFAULT_OPSET,
    cache_dir: str | Path | None = None,
    eval_forward: str | None = None,
) -> ExportReport:
    """Write ``out_dir/model.onnx`` and ``out_dir/model.json`` for a checkpoint.

    Args:
        checkpoint: a ``model.pt`` (or ``checkpoint.pt``) from training.
        out_dir: the bundle folder (created; existing model.onnx / model.json are replaced only on success).
        name: the bundle name (default: the folder's name).
        version: semantic version recorded in the card.
        description: free text for the card.
        metrics: an eval.json path or an :class:`EvalResult`; None runs the evaluation here (full test set
            unless ``limit``).
        validation: the run's val.json (or an :class:`EvalResult`): figures on the held-out training tracks,
            recorded in the card's ``metrics.validation``; None records none.
        data_dir: GTSRB folder (class names, parity images, evaluation).
        limit: evaluate on the first N test images only (tests; the card records ``num_images``).
        parity_images: real test images in the larger parity batch.
        opset: ONNX opset (>= 16 for GridSample).
        eval_forward: override the linearized sampler's inference forward ("bilinear" or "expected"); the
            metrics must have been measured with the same forward.

    Raises:
        ExportError: checker or parity failure, metrics from a different inference forward, bad arguments.
        CheckpointError, DataError: unreadable checkpoint or data.
    """
    from training.data import load_class_names, load_gtsrb, resolve_data_dir

    if opset < 16:
        raise ExportError(f"opset {opset} < 16: GridSample needs opset 16 or later")
    out = Path(out_dir)
    name = name or out.name
    loaded = load_checkpoint(checkpoint, eval_forward=eval_forward)
    model = loaded.model.float().eval()
    root = resolve_data_dir(data_dir)
    class_names = load_class_names(root)

    if metrics is None:
        result, _ = evaluate_checkpoint(
            checkpoint, data_dir=root, limit=limit, cache_dir=cache_dir, eval_forward=eval_forward
        )
    elif isinstance(metrics, EvalResult):
        result = metrics
    else:
        result = load_metrics(metrics)
    if result.inference_forward != inference_forward_of(model):
        raise ExportError(
            f"metrics were computed with inference forward {result.inference_forward!r}, but the model "
            f"exports {inference_forward_of(model)!r}"
        )
    val_result = (
        None
        if validation is None
        else validation
        if isinstance(validation, EvalResult)
        else load_metrics(validation)
    )

    module = ExportModule(model).eval()
    parity = load_gtsrb(root, "test", limit=max(2, parity_images))
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp:
        onnx_tmp = Path(tmp) / "model.onnx"
        export_onnx(module, onnx_tmp, opset)
        check_onnx(onnx_tmp)
        worst = check_parity(module, onnx_tmp, parity.images)
        digest = sha256_file(onnx_tmp)
        card = build_card(
            name=name,
            version=version,
            description=description,
            loaded=loaded,
            metrics=result,
            class_names=class_names,
            sha256=digest,
            opset=opset,
            validation=val_result,
        )
        json_tmp = Path(tmp) / "model.json"
        json_tmp.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        shutil.move(str(onnx_tmp), out / "model.onnx")
        shutil.move(str(json_tmp), out / "model.json")
    return ExportReport(out, out / "model.onnx", out / "model.json", digest, worst, card)


def mark_default(bundle_dir: str | Path) -> Path:
    """Write ``<repository>/DEFAULT`` (one line: the bundle folder's name) next to the bundle folder."""
    bundle = Path(bundle_dir)
    marker = bundle.parent / "DEFAULT"
    marker.write_text(bundle.name + "\n", encoding="utf-8")
    return marker
