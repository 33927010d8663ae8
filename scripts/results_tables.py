"""Regenerate the markdown tables of docs/results.md (issue 5 sections) from the committed JSON.

Each generated table sits in docs/results.md between ``<!-- results-tables:NAME:begin -->`` and
``<!-- results-tables:NAME:end -->``; ``tests/scripts/test_results_tables.py`` fails when the markdown and
the JSON disagree, so the docs cannot drift from the raw results.

Sources (paths relative to the repository root):

* ``alignment``, ``alignment-sweep``: ``docs/results/alignment/study.json`` (written by ``python -m training
  align``; per-image errors in ``cells/<sampler>-r<rate>.json``).
* ``rotation``: ``docs/results/rotation/<model>/eval.json`` and ``config.json`` (the runs of ``python -m
  training reproduce rotation``).
* ``grid``: ``docs/results/grid/<run>/eval.json`` and ``config.json``, one folder per (model, sampler, rate,
  seed) run of ``python -m training reproduce samplers``, and of ``reproduce cnn`` for the baseline row (named
  ``<model>-<sampler>-r<rate>-s<seed>``; the figures are read from the files, not the names); errors averaged
  over seeds.
* ``docs/results/poster.json``: the reference figures to print beside ours (null where unknown).

Run from the repository root::

    .venv/bin/python -m scripts.results_tables            # print every table
    .venv/bin/python -m scripts.results_tables --collect runs/rotation --write   # copy runs, then rewrite
    .venv/bin/python -m scripts.results_tables --write    # rewrite the marked blocks of docs/results.md
    .venv/bin/python -m scripts.results_tables --check    # exit 1 when docs/results.md is out of date
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "docs" / "results"
DOC = REPO_ROOT / "docs" / "results.md"
RATES = (1, 2, 4, 8)
SAMPLERS = ("bilinear", "multiscale", "linearized")
ROTATION_MODELS = ("stn", "stn-c", "stn-sl")
GRID_ROWS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cnn", ("bilinear",)),  # the poster's "CNN, no STN": the crop sampled through the perturbation
    ("stn", SAMPLERS),
    ("icstn", SAMPLERS),
)


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _poster(results: Path) -> dict[str, Any]:
    path = results / "poster.json"
    return dict(_load(path)) if path.is_file() else {}


_NO_POSTER = "Reference figures: none recorded in docs/results/poster.json (see the text)."


def _known(tree: Any) -> bool:
    """True when a nested dict of reference figures holds at least one number."""
    if isinstance(tree, dict):
        return any(_known(v) for v in tree.values())
    return isinstance(tree, int | float)


def _pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def _size(rate: int) -> int:
    return int(36 / rate + 0.5)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _within(cell_file: Path, px: float) -> float | None:
    """Fraction of a cell's images with a final corner error below ``px`` (None without the cell file)."""
    if not cell_file.is_file():
        return None
    errors = [float(e) for e in _load(cell_file)["errors_px"]]  # "inf" parses as infinity
    return sum(e < px for e in errors) / max(1, len(errors))


def alignment_table(results: Path = RESULTS) -> str:
    """Recall per sampler and rate, with the median corner error, the learning rate and the wall time."""
    study = _load(results / "alignment" / "study.json")
    config = study["config"]
    cells = {(c["sampler"], c["rate"]): c for c in study["cells"]}
    rates = [r for r in RATES if r in config["rates"]]
    poster = _poster(results).get("alignment", {}).get("recall", {})
    header = ["sampler"] + [f"{r}x ({_size(r)} px)" for r in rates]
    lines = [_row(header), _row(["---"] + ["---:"] * len(rates))]
    for sampler in config["samplers"]:
        row = [f"**{sampler}**"]
        for r in rates:
            c = cells[(sampler, r)]
            row.append(f"**{_pct(c['recall'])}** ({c['successes']}/{c['num_images']})")
        lines.append(_row(row))
        ref = poster.get(sampler, {})
        if any(ref.get(str(r)) is not None for r in rates):
            lines.append(_row([f"poster: {sampler}"] + [_pct(ref.get(str(r))) for r in rates]))
    head = ["sampler", "rate", "lr", "median error (px)", "90th pct (px)", "error < 3 px", "wall time (s)"]
    lines += ["", _row(head), _row(["---"] + ["---:"] * (len(head) - 1))]
    for sampler in config["samplers"]:
        for r in rates:
            c = cells[(sampler, r)]
            lines.append(
                _row(
                    [
                        sampler,
                        f"{r}x",
                        f"{c['lr']:g}",
                        f"{c['median_px']:.2f}",
                        f"{c['p90_px']:.2f}",
                        _pct(_within(results / "alignment" / "cells" / f"{sampler}-r{r}.json", 3.0)),
                        f"{c['wall_time_s']:.0f}",
                    ]
                )
            )
    if not _known(poster):
        lines += ["", _NO_POSTER]
    first = cells[(config["samplers"][0], rates[0])]
    env = study["environment"]
    lines += [
        "",
        f"{config['num_images']} images, {config['iterations']} Adam steps, seed {config['seed']}; "
        f"median corner error of the identity (the start): {first['initial_median_px']:.2f} px; "
        f"total wall time {study['wall_time_s'] / 60:.1f} min on {env['cpu'] or env['device']} "
        f"({env['torch_threads']} torch thread, torch {env['torch']}).",
    ]
    return "\n".join(lines)


def alignment_sweep_table(results: Path = RESULTS) -> str:
    """Tuning recall for every learning rate tried, per sampler and rate (chosen rate in bold)."""
    study = _load(results / "alignment" / "study.json")
    config = study["config"]
    lrs = list(config["lrs"])
    sweep = {(c["sampler"], c["rate"], c["lr"]): c for c in study["sweep"]}
    lines = [
        _row(["sampler", "rate"] + [f"lr {lr:g}" for lr in lrs]),
        _row(["---", "---:"] + ["---:"] * len(lrs)),
    ]
    for sampler in config["samplers"]:
        for r in config["rates"]:
            chosen = study["chosen_lr"][f"{sampler}-r{r}"]
            row = [sampler, f"{r}x"]
            for lr in lrs:
                c = sweep.get((sampler, r, lr))
                text = "n/a" if c is None else _pct(c["recall"])
                row.append(f"**{text}**" if lr == chosen else text)
            lines.append(_row(row))
    tune = config["tune_images"]
    lines += ["", f"{tune} tuning images (disjoint from the {config['num_images']} evaluation images)."]
    return "\n".join(lines)


def _rotation_runs(results: Path) -> list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]]:
    runs = []
    for model in ROTATION_MODELS:
        folder = results / "rotation" / model
        if not (folder / "eval.json").is_file():
            continue
        result = _load(folder / "result.json") if (folder / "result.json").is_file() else {}
        runs.append((model, _load(folder / "eval.json"), _load(folder / "config.json"), result))
    return runs


def rotation_table(results: Path = RESULTS) -> str:
    """Test error on rotated GTSRB and how well each transformer undoes the rotation."""
    runs = _rotation_runs(results)
    if not runs:
        return "_No rotated-GTSRB runs in docs/results/rotation/ yet._"
    poster = _poster(results).get("rotation", {}).get("error", {})
    head = ["model", "epochs", "train wall time", "rotated test error", "unrotated test error"]
    head += ["mean abs angle error", "slope", "within 15 deg"]
    lines = [_row(head), _row(["---"] + ["---:"] * (len(head) - 1))]
    bins_lines: list[str] = []
    for model, ev, cfg, _result in runs:
        rot = ev["extra"]["rotation"]
        n = ev["num_images"]
        wall = ev["extra"].get("training_wall_time_s", 0.0) / 60
        lines.append(
            _row(
                [
                    f"**{model}**",
                    str(cfg["optim"]["epochs"]),
                    f"{wall:.1f} min",
                    f"**{_pct(ev['error_perturbed'], 2)}** ({round(ev['error_perturbed'] * n)}/{n})",
                    f"{_pct(ev['error_clean'], 2)}",
                    f"{rot['mean_abs_error_deg']:.1f} deg",
                    f"{rot['slope']:.2f}",
                    _pct(rot["within_15_deg"]),
                ]
            )
        )
        if poster.get(model) is not None:
            lines.append(_row([f"Finnveden et al.: {model}", "", "", _pct(poster[model], 2)] + [""] * 4))
        bins_lines.append(
            _row(
                [model]
                + [
                    f"{_pct(b.get('error'), 2)} / {b['mean_abs_error_deg']:.1f} deg"
                    if b["mean_abs_error_deg"] is not None
                    else "n/a"
                    for b in rot["bins"]
                ]
            )
        )
    if not _known(poster):
        lines += ["", _NO_POSTER]
    bins = runs[0][1]["extra"]["rotation"]["bins"]
    lines += [
        "",
        _row(["model"] + [f"abs(angle) in [{b['lo']:g}, {b['hi']:g}] deg" for b in bins]),
        _row(["---"] + ["---:"] * len(bins)),
        *bins_lines,
        "",
        "Per bin of the applied rotation: rotated test error / mean absolute angle error of the transformer.",
    ]
    return "\n".join(lines)


def _grid_runs(results: Path) -> dict[tuple[str, str, int], list[dict[str, Any]]]:
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    root = results / "grid"
    if not root.is_dir():
        return groups
    for folder in sorted(p for p in root.iterdir() if (p / "eval.json").is_file()):
        cfg = _load(folder / "config.json")["model"]
        key = (str(cfg["model_type"]), str(cfg["sampler"]), int(cfg["downsampling_rate"]))
        groups.setdefault(key, []).append(_load(folder / "eval.json"))
    return groups


def grid_table(results: Path = RESULTS) -> str:
    """Perturbed test error of the sampler x model x rate grid (mean over seeds), beside the poster's."""
    groups = _grid_runs(results)
    poster = _poster(results).get("grid", {}).get("error", {})
    header = ["model", "sampler"] + [f"{r}x" for r in RATES]
    lines = [_row(header), _row(["---", "---"] + ["---:"] * len(RATES))]
    for model, samplers in GRID_ROWS:
        for sampler in samplers:
            ours = []
            for r in RATES:
                evals = groups.get((model, sampler, r), [])
                if evals:
                    mean = sum(e["error_perturbed"] for e in evals) / len(evals)
                    ours.append(f"{_pct(mean, 2)} (n={len(evals)})")
                else:
                    ours.append("not run")
            ref = poster.get(model, {}).get(sampler, {})
            lines.append(_row([model, sampler, *ours]))
            if any(ref.get(str(r)) is not None for r in RATES):
                lines.append(_row([f"poster: {model}", sampler, *[_pct(ref.get(str(r)), 2) for r in RATES]]))
    if not _known(poster):
        lines += ["", _NO_POSTER]
    details = grid_details(results)
    if details:
        lines += ["", details]
    return "\n".join(lines)


def grid_details(results: Path = RESULTS) -> str:
    """One row per grid run: test errors (clean, perturbed; a linearized run also with the exact bilinear
    forward), the inference forward, epochs and training wall time."""
    root = results / "grid"
    folders = sorted(p for p in root.iterdir() if (p / "eval.json").is_file()) if root.is_dir() else []
    if not folders:
        return ""
    head = ["run", "clean", "perturbed", "inference forward", "perturbed, exact bilinear forward"]
    head += ["epochs", "train wall time"]
    lines = [_row(head), _row(["---"] + ["---:"] * 2 + ["---"] + ["---:"] * 3)]
    for folder in folders:
        ev = _load(folder / "eval.json")
        cfg = _load(folder / "config.json")
        other = folder / "eval_bilinear.json"
        wall = ev.get("extra", {}).get("training_wall_time_s")
        if wall is None and other.is_file():  # re-evaluated with another forward: the training's own eval
            wall = _load(other).get("extra", {}).get("training_wall_time_s")
        lines.append(
            _row(
                [
                    folder.name,
                    _pct(ev["error_clean"], 2),
                    _pct(ev["error_perturbed"], 2),
                    str(ev.get("inference_forward", "")),
                    _pct(_load(other)["error_perturbed"], 2) if other.is_file() else "",
                    str(cfg["optim"]["epochs"]),
                    "" if wall is None else f"{wall / 60:.1f} min",
                ]
            )
        )
    return "\n".join(lines)


TABLES: dict[str, Callable[[Path], str]] = {
    "alignment": alignment_table,
    "alignment-sweep": alignment_sweep_table,
    "rotation": rotation_table,
    "grid": grid_table,
}


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- results-tables:{name}:begin -->", f"<!-- results-tables:{name}:end -->"


def render(doc: str, results: Path = RESULTS) -> str:
    """``doc`` with every marked block replaced by its freshly generated table."""
    for name, make in TABLES.items():
        begin, end = _markers(name)
        pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.DOTALL)
        match = pattern.search(doc)
        if match:
            doc = f"{doc[: match.start()]}{begin}\n{make(results)}\n{end}{doc[match.end() :]}"
    return doc


def blocks(doc: str) -> dict[str, str]:
    """The marked blocks of ``doc``: name -> the text between its markers (without them)."""
    out = {}
    for name in TABLES:
        begin, end = _markers(name)
        match = re.search(re.escape(begin) + r"\n(.*?)\n" + re.escape(end), doc, re.DOTALL)
        if match:
            out[name] = match.group(1)
    return out


COLLECTED = ("config.json", "metrics.jsonl", "eval.json", "eval_bilinear.json", "result.json")
"""Files copied per run (``eval_bilinear.json``: a linearized run evaluated with exact bilinear)."""


def collect(
    runs: Path, results: Path = RESULTS, figures: Path = REPO_ROOT / "docs" / "figures"
) -> list[Path]:
    """Copy finished runs (``reproduce`` output folders) into the committed layout.

    Each sub-folder of ``runs`` with ``config.json`` and ``eval.json`` is one run. Rotated-GTSRB runs
    (``data.rotation_deg > 0``) go to ``rotation/<model>/`` with their angle plot as
    ``figures/rotation_<model>.png``; other runs go to ``grid/<model>-<sampler>-r<rate>-s<seed>/``.

    Returns:
        The folders written.
    """
    written = []
    for run in sorted(
        p for p in runs.iterdir() if (p / "config.json").is_file() and (p / "eval.json").is_file()
    ):
        config = _load(run / "config.json")
        m = config["model"]
        if float(config["data"].get("rotation_deg", 0.0)) > 0:
            dest = results / "rotation" / m["model_type"]
            plot = run / "plots" / "angle_vs_rotation.png"
            if plot.is_file():
                figures.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(plot, figures / f"rotation_{m['model_type']}.png")
        else:
            name = f"{m['model_type']}-{m['sampler']}-r{m['downsampling_rate']}-s{config['run']['seed']}"
            dest = results / "grid" / name
        dest.mkdir(parents=True, exist_ok=True)
        for file in COLLECTED:
            if (run / file).is_file():
                shutil.copyfile(run / file, dest / file)
        written.append(dest)
    return written


def main(argv: list[str] | None = None) -> int:
    """Print the tables, ``--collect`` runs, or ``--write`` / ``--check`` docs/results.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--collect", type=Path, nargs="+", help="copy the finished runs of these folders into docs/results"
    )
    parser.add_argument("--write", action="store_true", help="rewrite the marked blocks of docs/results.md")
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/results.md is out of date")
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    for runs in args.collect or ():
        for folder in collect(runs, args.results):
            print(f"collected {folder}")
    if not (args.write or args.check):
        if not args.collect:
            for name, make in TABLES.items():
                print(f"## {name}\n\n{make(args.results)}\n")
        return 0
    doc = args.doc.read_text(encoding="utf-8")
    fresh = render(doc, args.results)
    if args.check:
        if fresh != doc:
            print(f"{args.doc} is out of date: run python -m scripts.results_tables --write", file=sys.stderr)
            return 1
        return 0
    args.doc.write_text(fresh, encoding="utf-8")
    print(f"rewrote {len(blocks(fresh))} tables in {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
