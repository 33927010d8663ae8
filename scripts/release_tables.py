"""Print the markdown tables of a release in docs/results.md from the runs' JSON files.

    .venv/bin/python -m scripts.release_tables --candidates docs/results/release-2.0.0/candidates.json

``candidates.json`` lists the candidates in order: ``{"name", "folder", "epochs", "wall_min", "note"}``
and, for the shipped ones, ``"test": "<eval json>"``. Each folder holds the run's ``val.json`` (the final
model on the validation tracks) and ``metrics.jsonl``. A candidate without ``val.json`` (a run stopped early)
is reported from its last epoch record. Test figures are printed only for candidates that have them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _val_row(entry: dict[str, Any], root: Path) -> list[str]:
    folder = root / entry["folder"]
    val_path = folder / "val.json"
    if val_path.is_file():
        val = json.loads(val_path.read_text())
        n = val["num_images"]
        clean, pert = val["error_clean"], val["error_perturbed"]
        a = val.get("alignment") or {}
        iou_c = a.get("clean", {}).get("iou_median")
        iou_p = a.get("perturbed", {}).get("iou_median")
        p5 = a.get("clean", {}).get("iou_p5")
        out = a.get("clean", {}).get("share_outside_gt_10pct")
    else:
        last = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines() if x.strip()][-1]
        n = None
        clean, pert = last["val_error_clean"], last["val_error_perturbed"]
        iou_c, iou_p = last.get("val_iou_median_clean"), last.get("val_iou_median_perturbed")
        p5, out = None, last.get("val_outside_clean")
    count = "" if n is None else f" ({round(clean * n)})"
    return [
        entry["name"],
        str(entry.get("epochs", "")),
        f"{entry['wall_min']:.1f} min" if "wall_min" in entry else "",
        f"{_pct(clean)}{count}",
        _pct(pert),
        "-" if iou_c is None else f"{iou_c:.3f}",
        "-" if p5 is None else f"{p5:.3f}",
        "-" if iou_p is None else f"{iou_p:.3f}",
        _pct(out),
        entry.get("note", ""),
    ]


def _test_row(entry: dict[str, Any], root: Path) -> list[str] | None:
    if "test" not in entry:
        return None
    test = json.loads((root / entry["test"]).read_text())
    n = test["num_images"]
    a = test.get("alignment") or {}
    c, p = a.get("clean", {}), a.get("perturbed", {})
    return [
        entry["name"],
        f"{_pct(test['error_clean'])} ({round(test['error_clean'] * n)})",
        f"{_pct(test['error_perturbed'])} ({round(test['error_perturbed'] * n)})",
        f"{c.get('iou_median', float('nan')):.3f} / {c.get('iou_p5', float('nan')):.3f}",
        _pct(c.get("share_iou_ge_0_7")),
        f"{c.get('mean_corner_px', float('nan')):.2f}",
        _pct(c.get("share_outside_gt_10pct")),
        f"{p.get('iou_median', float('nan')):.3f} / {p.get('iou_p5', float('nan')):.3f}",
        _pct(p.get("share_outside_gt_10pct")),
    ]


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def per_class_table(eval_json: Path, names: list[str]) -> str:
    """Per class: clean and perturbed error, clean IoU median and share outside, from one eval JSON."""
    test = json.loads(eval_json.read_text())
    a = test["alignment"]
    rows = []
    for k, count in enumerate(test["class_counts"]):
        if not count:
            continue
        c, p = a["clean"]["per_class"][k], a["perturbed"]["per_class"][k]
        rows.append(
            [
                str(k),
                names[k] if k < len(names) else "",
                str(count),
                _pct(test["per_class_clean"][k]),
                _pct(test["per_class_perturbed"][k]),
                f"{c['iou_median']:.3f}",
                f"{p['iou_median']:.3f}",
                _pct(c["share_outside_gt_10pct"]),
            ]
        )
    header = [
        "class",
        "name",
        "images",
        "clean err",
        "pert. err",
        "IoU clean",
        "IoU pert.",
        ">10% out (clean)",
    ]
    return _table(header, rows)


def main(argv: list[str] | None = None) -> int:
    """Print the candidates table, the test table of the shipped candidates and, optionally, per class."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--candidates", required=True, help="candidates.json")
    parser.add_argument("--per-class", help="an eval JSON whose per-class figures to print")
    parser.add_argument("--classes", default="../shared/data/gtsrb/classes.csv", help="classes.csv")
    args = parser.parse_args(argv)
    path = Path(args.candidates)
    entries = json.loads(path.read_text())
    root = path.parent
    header = [
        "candidate",
        "epochs",
        "wall",
        "val err clean",
        "val err pert.",
        "val IoU clean (median)",
        "p5",
        "val IoU pert. (median)",
        ">10% out (clean)",
        "",
    ]
    print(_table(header, [_val_row(e, root) for e in entries]))
    print()
    test_rows = [r for r in (_test_row(e, root) for e in entries) if r is not None]
    test_header = [
        "shipped",
        "test err clean",
        "test err pert.",
        "IoU clean median / p5",
        "IoU >= 0.7",
        "corner px",
        ">10% out",
        "IoU pert. median / p5",
        ">10% out (pert.)",
    ]
    print(_table(test_header, test_rows))
    if args.per_class:
        import csv

        with open(args.classes, newline="", encoding="utf-8") as f:
            names = [row[-1] for row in list(csv.reader(f))[1:]]
        print()
        print(per_class_table(Path(args.per_class), names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
