"""Figures saved as PNG: training curves, aligned crops per class, rotation angles, confusion matrix.

numpy arrays in, a PNG path out. matplotlib is imported inside the functions and drawn on an Agg canvas
(``matplotlib.figure.Figure`` + ``FigureCanvasAgg``): no pyplot, no global backend switch, no display needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from training.errors import ShapeError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_DPI = 100


def _new_figure(width_in: float, height_in: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=_DPI)
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def plot_training_curves(history: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Loss and error against epoch (or step), one line per logged series (train, val, perturbed, ...).

    Each history entry is one logged record (a JSON line of the metrics log). The x value is the entry's
    ``"epoch"``, else its ``"step"``, else its position. Every numeric key containing ``"loss"`` goes to the
    loss panel; every numeric key containing ``"error"`` (fractions in [0, 1]) goes to the error panel, in
    percent on a log scale. A series only has points where its key is present and finite.

    Args:
        history: the logged records, in order.
        path: PNG file to write (parent folders are created).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ShapeError: no entry has a loss or error value.
    """
    series: dict[str, tuple[list[float], list[float]]] = {}
    x_label = "epoch" if any("epoch" in h for h in history) else "step"
    for i, entry in enumerate(history):
        x = entry.get("epoch", entry.get("step", i))
        if not _is_number(x):
            continue
        for key, value in entry.items():
            if ("loss" in key or "error" in key) and _is_number(value) and math.isfinite(float(value)):
                xs, ys = series.setdefault(key, ([], []))
                xs.append(float(x))
                ys.append(float(value))
    if not series:
        raise ShapeError("plot_training_curves: history has no numeric loss or error values")

    fig = _new_figure(12, 4.5)
    ax_loss, ax_err = fig.subplots(1, 2)
    for key in sorted(series):
        xs, ys = series[key]
        style = "--" if key.startswith("train") else "-"
        marker = "o" if len(xs) <= 30 else None
        if "loss" in key:
            ax_loss.plot(xs, ys, style, marker=marker, markersize=3, label=key)
        else:
            pct = np.asarray(ys) * 100
            ax_err.plot(xs, pct, style, marker=marker, markersize=3, label=key)
    ax_loss.set(xlabel=x_label, ylabel="cross-entropy loss", title="Loss")
    ax_err.set(xlabel=x_label, ylabel="error (%)", title="Error")
    if any("error" in k and min(series[k][1]) > 0 for k in series):
        from matplotlib.ticker import FuncFormatter

        ax_err.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax_err.yaxis.set_major_formatter(plain)
        low, high = ax_err.get_ylim()
        if high / low < 30:  # less than ~1.5 decades: label the minor ticks too
            ax_err.yaxis.set_minor_formatter(plain)
    for ax in (ax_loss, ax_err):
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    return _save(fig, path)


def _mosaic(tiles: np.ndarray, cols: int, gap: int, fill: float) -> np.ndarray:
    """(K, S, S, C) tiles -> one (rows*(S+gap)-gap, cols*(S+gap)-gap, C) image, row-major, gaps = fill."""
    k, s = tiles.shape[0], tiles.shape[1]
    rows = math.ceil(k / cols)
    out = np.full((rows * (s + gap) - gap, cols * (s + gap) - gap, tiles.shape[3]), fill, dtype=np.float64)
    for i in range(k):
        r, c = divmod(i, cols)
        out[r * (s + gap) : r * (s + gap) + s, c * (s + gap) : c * (s + gap) + s] = tiles[i]
    return out


def plot_class_crops(
    crops: np.ndarray, labels: np.ndarray, class_names: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """Per class, the mean and the variance of the aligned crops (IC-STN's figure).

    Left: a grid of the per-class mean crops (RGB). Right: the per-class pixel variance averaged over the
    colour channels, on one shared colour scale; a well aligned class has a sharp mean and a dark variance.
    Classes without crops stay blank.

    Args:
        crops: (N, 3, S, S) crops, RGB, values 0..255 (the network's aligned crops, any S).
        labels: (N,) class ids in 0..len(class_names)-1.
        class_names: one name per class (43 for GTSRB); the grid is labelled with class ids.
        path: PNG file to write.
        title: optional figure title.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    crops = np.asarray(crops, dtype=np.float64)
    labels = np.asarray(labels)
    k = len(class_names)
    if crops.ndim != 4 or crops.shape[1] != 3 or crops.shape[2] != crops.shape[3]:
        raise ShapeError(f"plot_class_crops: expected (N, 3, S, S) crops, got {crops.shape}")
    if labels.shape != (crops.shape[0],) or (labels.size and (labels.min() < 0 or labels.max() >= k)):
        raise ShapeError(f"plot_class_crops: expected ({crops.shape[0]},) labels in 0..{k - 1}")
    s = crops.shape[2]
    means = np.full((k, s, s, 3), np.nan)
    variances = np.full((k, s, s, 1), np.nan)
    for c in range(k):
        own = crops[labels == c].transpose(0, 2, 3, 1)
        if len(own):
            means[c] = own.mean(axis=0) / 255.0
            variances[c, ..., 0] = own.var(axis=0).mean(axis=-1)
    cols = math.ceil(math.sqrt(k * 4 / 3))
    gap = max(1, s // 12)
    mean_img = np.clip(np.nan_to_num(_mosaic(means, cols, gap, 1.0), nan=1.0), 0, 1)
    var_img = _mosaic(variances, cols, gap, np.nan)[..., 0]
    vmax = float(np.nanmax(var_img)) if np.isfinite(var_img).any() else 1.0

    fig = _new_figure(14, 6.2)
    ax_mean, ax_var = fig.subplots(1, 2)
    ax_mean.imshow(mean_img, interpolation="nearest")
    im = ax_var.imshow(var_img, cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
    fig.colorbar(im, ax=ax_var, shrink=0.8, label="variance (grey levels^2, mean over RGB)")
    for ax, name in ((ax_mean, "mean"), (ax_var, "variance")):
        ax.set_title(f"Per-class {name} of the aligned crops ({s}x{s})")
        ax.set_xticks([])
        ax.set_yticks([])
        for c in range(k):
            r, col = divmod(c, cols)
            ax.text(col * (s + gap), r * (s + gap), str(c), fontsize=7, color="cyan", va="top", ha="left")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_angle_vs_rotation(
    applied_deg: np.ndarray, predicted_deg: np.ndarray, path: str | Path, title: str
) -> Path:
    """The rotation the transformer predicts against the rotation applied to its input (Finnveden, Fig. 3).

    A perfect transformer undoes every applied rotation, so its points lie on the dashed line ``predicted =
    applied`` (with the convention of :func:`training.geometry.rotation_warps`: rotating content by ``a`` is
    undone by the warp of angle ``a``, read back by :func:`training.geometry.rotation_angle`). The solid line
    is the mean prediction per applied angle, the band +- one standard deviation.

    Args:
        applied_deg: (N,) rotation applied to each test image, degrees.
        predicted_deg: (N,) rotation angle of the transformer's warp for that image, degrees.
        path: PNG file to write.
        title: figure title (model and data).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    applied = np.asarray(applied_deg, dtype=np.float64)
    predicted = np.asarray(predicted_deg, dtype=np.float64)
    if applied.ndim != 1 or predicted.shape != applied.shape or applied.size == 0:
        raise ShapeError(
            f"plot_angle_vs_rotation: expected two equal (N,), got {applied.shape}, {predicted.shape}"
        )
    values, inverse = np.unique(np.round(applied, 6), return_inverse=True)
    if len(values) > 60:  # continuous angles: bin them
        edges = np.linspace(applied.min(), applied.max(), 41)
        inverse = np.clip(np.digitize(applied, edges) - 1, 0, 39)
        values = (edges[:-1] + edges[1:]) / 2
    present = np.bincount(inverse, minlength=len(values)) > 0
    mean = np.array([predicted[inverse == i].mean() if present[i] else np.nan for i in range(len(values))])
    std = np.array([predicted[inverse == i].std() if present[i] else np.nan for i in range(len(values))])

    fig = _new_figure(6.5, 6)
    ax = fig.subplots()
    lo, hi = float(min(applied.min(), predicted.min())), float(max(applied.max(), predicted.max()))
    ax.plot([lo, hi], [lo, hi], "k--", linewidth=1, label="ideal: predicted = applied")
    ax.scatter(applied, predicted, s=4, alpha=0.25, color="tab:blue", label="test images")
    ax.plot(values, mean, "-", color="tab:red", linewidth=2, label="mean prediction")
    ax.fill_between(values, mean - std, mean + std, color="tab:red", alpha=0.2, label="+- 1 std")
    ax.set(
        xlabel="rotation applied to the input (deg)",
        ylabel="rotation predicted by the transformer (deg)",
        title=title,
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path)


def plot_confusion_matrix(
    labels: np.ndarray, predictions: np.ndarray, class_names: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """Confusion matrix (rows: true class, columns: predicted class), counts on a log colour scale.

    The diagonal (correct predictions) is drawn in grey so the errors stand out; every off-diagonal cell with
    a count is annotated. The y axis names the classes.

    Args:
        labels: (N,) true class ids in 0..len(class_names)-1.
        predictions: (N,) predicted class ids, same range.
        class_names: one name per class.
        path: PNG file to write.
        title: optional title prefix (e.g. the model's name).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import FuncFormatter

    y = np.asarray(labels)
    p = np.asarray(predictions)
    k = len(class_names)
    if y.ndim != 1 or p.shape != y.shape or y.size == 0:
        raise ShapeError(
            f"plot_confusion_matrix: expected two equal non-empty (N,), got {y.shape}, {p.shape}"
        )
    if min(y.min(), p.min()) < 0 or max(y.max(), p.max()) >= k:
        raise ShapeError(f"plot_confusion_matrix: class ids must lie in 0..{k - 1}")
    counts = np.bincount(y * k + p, minlength=k * k).reshape(k, k)
    errors = int(counts.sum() - np.trace(counts))
    off = np.where(np.eye(k, dtype=bool) | (counts == 0), np.nan, counts.astype(np.float64))
    diag = np.where(np.eye(k, dtype=bool), counts.astype(np.float64), np.nan)

    fig = _new_figure(13, 12)
    ax = fig.subplots()
    ax.imshow(np.where(np.isnan(diag), np.nan, 1.0), cmap="Greys", vmin=0, vmax=3, interpolation="nearest")
    vmax = max(float(np.nanmax(off)) if np.isfinite(off).any() else 1.0, 2.0)
    im = ax.imshow(off, cmap="Reds", norm=LogNorm(vmin=1, vmax=vmax), interpolation="nearest")
    bar = fig.colorbar(im, ax=ax, shrink=0.6, label="misclassified images")
    bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    bar.ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    for i, j in zip(*np.nonzero(np.isfinite(off)), strict=True):
        ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=6)
    ax.set_xticks(range(k), [str(i) for i in range(k)], fontsize=6)
    ax.set_yticks(range(k), [f"{name[:32]} {i}" for i, name in enumerate(class_names)], fontsize=6)
    ax.set(xlabel="predicted class", ylabel="true class")
    head = f"{title}: " if title else ""
    ax.set_title(f"{head}{errors} errors in {y.size} images ({100 * errors / y.size:.2f}%); diagonal in grey")
    return _save(fig, path)


def plot_alignment_recall(
    rates: Sequence[int], recalls: Mapping[str, Sequence[float]], path: str | Path, title: str
) -> Path:
    """Alignment recall against the downsampling rate, one line per sampler (issue 5, the alignment study).

    Args:
        rates: downsampling rates r (x axis, log2 scale; the crop is 36 / r px a side).
        recalls: sampler name -> recall in [0, 1] at each rate (same order as ``rates``).
        path: PNG file to write.
        title: figure title.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    xs = [int(r) for r in rates]
    if not xs or any(len(v) != len(xs) for v in recalls.values()):
        raise ShapeError(f"plot_alignment_recall: expected {len(xs)} recalls per sampler")
    fig = _new_figure(6.5, 4.5)
    ax = fig.subplots()
    for name, values in recalls.items():
        style = "--" if name.endswith("-exact") else "-"
        ax.plot(xs, [100 * float(v) for v in values], style, marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [f"{r}x ({int(36 / r + 0.5)} px)" for r in xs])
    ax.set_ylim(0, 100)
    ax.set(xlabel="downsampling rate (target side)", ylabel="recall (%)", title=title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_crop_comparison(
    images: np.ndarray,
    boxes: np.ndarray,
    quads: Mapping[str, np.ndarray],
    crops: Mapping[str, np.ndarray],
    titles: Sequence[str],
    path: str | Path,
) -> Path:
    """Aligned crops of several models on the same photos, with the annotated sign box.

    One column per photo. Top row: the 50x50 frame with the annotated box (white, dashed) and each model's
    crop quadrilateral (one colour per model; corners may lie outside the frame, the axes show the whole
    quadrilateral). Below: one row of crops per model.

    Args:
        images: (N, 50, 50, 3) uint8 RGB frames.
        boxes: (N, 4) annotated boxes (x0, y0, x1, y1), frame pixels (edges at integers).
        quads: model name -> (N, 4, 2) crop corners in frame pixels (``alignment.crop_quads``).
        crops: model name -> (N, 3, S, S) crops, 0..255 (same keys as ``quads``).
        titles: N column titles.
        path: PNG file to write.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    n = int(images.shape[0])
    names = list(quads)
    if images.ndim != 4 or images.shape[1:] != (50, 50, 3) or boxes.shape != (n, 4) or len(titles) != n:
        raise ShapeError("plot_crop_comparison: expected (N, 50, 50, 3) images, (N, 4) boxes and N titles")
    colours = ["#e41a1c", "#4daf4a", "#377eb8", "#ff7f00"]
    fig = _new_figure(1.9 * n, 1.9 * (1 + len(names)) + 0.4)
    grid = fig.add_gridspec(1 + len(names), n)
    for i in range(n):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(images[i], extent=(0, 50, 50, 0), interpolation="nearest")
        x0, y0, x1, y1 = (float(v) for v in boxes[i])
        ax.plot([x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0], "--", color="white", lw=1.2)
        lo, hi = 0.0, 50.0
        for k, name in enumerate(names):
            q = np.asarray(quads[name][i])
            closed = np.vstack([q, q[:1]])
            ax.plot(closed[:, 0], closed[:, 1], color=colours[k % len(colours)], lw=1.5, label=name)
            lo, hi = min(lo, float(q.min())), max(hi, float(q.max()))
        ax.set_xlim(lo - 1, hi + 1)
        ax.set_ylim(hi + 1, lo - 1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(titles[i], fontsize=8)
        if i == 0:
            ax.legend(fontsize=6, loc="lower left", framealpha=0.6)
        for k, name in enumerate(names):
            cax = fig.add_subplot(grid[1 + k, i])
            crop = np.clip(np.asarray(crops[name][i]).transpose(1, 2, 0) / 255.0, 0, 1)
            cax.imshow(crop, interpolation="nearest")
            cax.set_xticks([])
            cax.set_yticks([])
            for spine in cax.spines.values():
                spine.set_edgecolor(colours[k % len(colours)])
                spine.set_linewidth(2)
            if i == 0:
                cax.set_ylabel(name, fontsize=8)
    return _save(fig, path)
