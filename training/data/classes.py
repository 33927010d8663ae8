"""The 43 GTSRB class names (``classes.csv``: ``ClassId,SignName``)."""

from __future__ import annotations

import csv
from pathlib import Path

from training.data.dataset import NUM_CLASSES
from training.errors import DataError


def load_class_names(data_dir: Path) -> list[str]:
    """Read ``data_dir/classes.csv`` (or ``data_dir`` itself when it is the CSV file).

    Returns:
        43 sign names, index = class id.

    Raises:
        DataError: missing or unreadable file, a bad row, or ids that are not exactly 0..42 once each.
    """
    path = Path(data_dir)
    if path.is_dir():
        path = path / "classes.csv"
    if not path.is_file():
        raise DataError(f"{path}: class-name file not found")
    names: dict[int, str] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or [h.strip() for h in header[:2]] != ["ClassId", "SignName"]:
                raise DataError(f"{path}: line 1: expected the header ClassId,SignName")
            for fields in reader:
                if not fields:
                    continue
                line = reader.line_num
                if len(fields) != 2 or not fields[0].strip().isdigit() or not fields[1].strip():
                    got = ",".join(fields)
                    raise DataError(f"{path}: line {line}: expected ClassId,SignName, got {got!r}")
                class_id = int(fields[0])
                if class_id in names or class_id >= NUM_CLASSES:
                    raise DataError(f"{path}: line {line}: class id {class_id} repeated or outside 0..42")
                names[class_id] = fields[1].strip()
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read the CSV ({exc})") from exc
    if len(names) != NUM_CLASSES:
        raise DataError(f"{path}: expected {NUM_CLASSES} classes, found {len(names)}")
    return [names[i] for i in range(NUM_CLASSES)]
