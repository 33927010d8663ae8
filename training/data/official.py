"""Loaders of the official GTSRB directory layout (the original download).

::

    GTSRB/Final_Training/Images/000NN/GT-000NN.csv    the annotations, columns below
    GTSRB/Final_Training/Images/000NN/TTTTT_NNNNN.ppm (or .png)
    GTSRB/Final_Test/Images/NNNNN.ppm                 (or .png)
    GTSRB/Final_Test/Images/GT-final_test.csv         the labelled test CSV (with ClassId)

CSV columns (semicolon-separated, header on line 1):
Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId.

The test labels are a separate official download (``GT-final_test.csv``); it is looked for in
``Final_Test/Images/``, ``Final_Test/``, ``GTSRB/`` and the folder given. Every image is resized whole to
50x50 with :func:`training.data.resize.resize_to_network_input`, exactly as the packed arrays were made.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from training.data.dataset import NUM_CLASSES, GtsrbSplit
from training.data.resize import NETWORK_INPUT_SIZE, resize_to_network_input
from training.errors import ConfigError, DataError

_TRACK_STEM = re.compile(r"^(\d+)_(\d+)$")
_CLASS_DIR = re.compile(r"^\d{5}$")
_IMAGE_SUFFIXES = (".ppm", ".png")


def find_official_root(root: Path, part: str) -> Path | None:
    """The ``GTSRB`` folder under ``root`` that holds ``part`` (``"Final_Training"`` or ``"Final_Test"``).

    ``root`` may be the ``GTSRB`` folder itself or its parent. None when neither holds ``part/Images``.
    """
    root = Path(root)
    for candidate in (root, root / "GTSRB"):
        if (candidate / part / "Images").is_dir():
            return candidate
    return None


def load_official_training(root: Path, limit: int | None = None) -> GtsrbSplit:
    """Load ``Final_Training``: every class folder ``000NN`` with its ``GT-000NN.csv``, class then CSV order.

    Args:
        root: the ``GTSRB`` folder or its parent.
        limit: keep only the first ``limit`` images (in class then CSV order).

    Returns:
        A :class:`GtsrbSplit` of (N, 50, 50, 3) uint8 RGB images, labels from the CSV's ClassId, and
        ``track_uid = label * 1000 + track`` from the file names ``TTTTT_NNNNN``.

    Raises:
        DataError: missing folder or CSV, a CSV row with missing fields or a bad value, a label outside
            0..42 or different from its class folder, an image that is missing or does not decode (the message
            names the file and line).
    """
    check_limit(limit)
    gtsrb = _require_root(root, "Final_Training")
    images_dir = gtsrb / "Final_Training" / "Images"
    class_dirs = sorted(p for p in images_dir.iterdir() if p.is_dir() and _CLASS_DIR.match(p.name))
    if not class_dirs:
        raise DataError(f"{images_dir}: no class folders 00000..00042")
    images: list[np.ndarray] = []
    labels: list[int] = []
    uids: list[int] = []
    names: list[str] = []
    for class_dir in class_dirs:
        if limit is not None and len(labels) >= limit:
            break
        csv_path = class_dir / f"GT-{class_dir.name}.csv"
        for line, row in _read_rows(csv_path):
            if limit is not None and len(labels) >= limit:
                break
            label = _label(csv_path, line, row)
            if label != int(class_dir.name):
                raise DataError(f"{csv_path}: line {line}: ClassId {label} in class folder {class_dir.name}")
            stem = Path(row["Filename"]).stem
            match = _TRACK_STEM.match(stem)
            if match is None:
                raise DataError(f"{csv_path}: line {line}: file name {row['Filename']!r} is not TTTTT_NNNNN")
            images.append(_load_image(class_dir, row["Filename"], csv_path, line))
            labels.append(label)
            uids.append(label * 1000 + int(match.group(1)))
            names.append(f"{class_dir.name}/{stem}")
    return _split(images, labels, np.array(uids, dtype=np.int32), names, images_dir, limit)


def load_official_test(root: Path, limit: int | None = None) -> GtsrbSplit:
    """Load ``Final_Test`` with the labelled ``GT-final_test.csv``, in CSV order (official file order).

    Args:
        root: the ``GTSRB`` folder or its parent.
        limit: keep only the first ``limit`` images.

    Returns:
        A :class:`GtsrbSplit` of (N, 50, 50, 3) uint8 RGB images and labels; ``track_uid`` is None.

    Raises:
        DataError: as :func:`load_official_training`; also when only the unlabelled ``GT-final_test.test.csv``
            is present.
    """
    check_limit(limit)
    gtsrb = _require_root(root, "Final_Test")
    images_dir = gtsrb / "Final_Test" / "Images"
    places = (images_dir, images_dir.parent, gtsrb, Path(root))
    csv_path = next((p / "GT-final_test.csv" for p in places if (p / "GT-final_test.csv").is_file()), None)
    if csv_path is None:
        hint = (
            " (only the unlabelled GT-final_test.test.csv is there)"
            if (images_dir / "GT-final_test.test.csv").is_file()
            else ""
        )
        raise DataError(
            f"{images_dir / 'GT-final_test.csv'}: labelled test CSV not found{hint}; download "
            "GT-final_test.csv (GTSRB_Final_Test_GT.zip) and put it in that folder"
        )
    images: list[np.ndarray] = []
    labels: list[int] = []
    names: list[str] = []
    for line, row in _read_rows(csv_path):
        if limit is not None and len(labels) >= limit:
            break
        labels.append(_label(csv_path, line, row))
        images.append(_load_image(images_dir, row["Filename"], csv_path, line))
        names.append(Path(row["Filename"]).stem)
    return _split(images, labels, None, names, images_dir, limit)


def _require_root(root: Path, part: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: GTSRB folder not found")
    gtsrb = find_official_root(root, part)
    if gtsrb is None:
        raise DataError(f"{root}: no {part}/Images folder (looked in {root} and {root / 'GTSRB'})")
    return gtsrb


def _read_rows(csv_path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line_number, row)`` for the data rows of a semicolon GTSRB CSV (header on line 1)."""
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: annotation CSV not found")
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=";")
            header = next(reader, None)
            if header is None or "Filename" not in header or "ClassId" not in header:
                raise DataError(f"{csv_path}: line 1: header must name the columns Filename and ClassId")
            for fields in reader:
                line = reader.line_num
                if not fields or all(not field.strip() for field in fields):
                    continue
                if len(fields) != len(header):
                    raise DataError(
                        f"{csv_path}: line {line}: expected {len(header)} fields ({';'.join(header)}), "
                        f"got {len(fields)}"
                    )
                yield line, dict(zip(header, (field.strip() for field in fields), strict=True))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{csv_path}: cannot read the CSV ({exc})") from exc


def _label(csv_path: Path, line: int, row: dict[str, str]) -> int:
    try:
        label = int(row["ClassId"])
    except ValueError:
        raise DataError(f"{csv_path}: line {line}: ClassId {row['ClassId']!r} is not an integer") from None
    if not 0 <= label < NUM_CLASSES:
        raise DataError(f"{csv_path}: line {line}: label {label} outside 0..{NUM_CLASSES - 1}")
    return label


def _load_image(folder: Path, filename: str, csv_path: Path, line: int) -> np.ndarray:
    """Decode ``folder/filename`` (trying .ppm and .png when the listed file is absent) and resize it."""
    if not filename or Path(filename).name != filename:
        raise DataError(f"{csv_path}: line {line}: bad file name {filename!r}")
    path = folder / filename
    if not path.is_file():
        alternatives = [path.with_suffix(s) for s in _IMAGE_SUFFIXES if path.with_suffix(s).is_file()]
        if not alternatives:
            raise DataError(f"{path}: image listed in {csv_path.name} line {line} not found")
        path = alternatives[0]
    try:
        with Image.open(path) as img:
            img.load()
            return resize_to_network_input(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot decode image ({exc})") from exc


def _split(
    images: list[np.ndarray],
    labels: list[int],
    uids: np.ndarray | None,
    names: list[str],
    source: Path,
    limit: int | None,
) -> GtsrbSplit:
    if not labels and limit != 0:
        raise DataError(f"{source}: no images listed")
    return GtsrbSplit(
        images=np.stack(images) if images else np.empty((0, NETWORK_INPUT_SIZE, NETWORK_INPUT_SIZE, 3), "u1"),
        labels=np.array(labels, dtype=np.int64),
        track_uid=uids,
        source=str(source),
        names=np.array(names),
    )


def check_limit(limit: int | None) -> None:
    """ConfigError when ``limit`` is negative."""
    if limit is not None and limit < 0:
        raise ConfigError(f"limit: expected a non-negative number of rows, got {limit}")
