"""Where the GTSRB data lies: an explicit option, else ``$GTSRB_DATA_DIR``, else ``../shared/data/gtsrb``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from training.errors import DataError

ENV_VAR: Final = "GTSRB_DATA_DIR"
DEFAULT_RELATIVE: Final = Path("..") / "shared" / "data" / "gtsrb"


def repo_root() -> Path:
    """The checkout this package lives in (the folder holding ``training/``)."""
    return Path(__file__).resolve().parents[2]


def resolve_data_dir(option: str | Path | None) -> Path:
    """The GTSRB data folder.

    Order: ``option`` when given; else the environment variable ``GTSRB_DATA_DIR`` when set and non-empty;
    else ``../shared/data/gtsrb`` relative to the current folder, then relative to the repository root, the
    first that exists. The folder must exist; its content is checked by the loaders.

    Returns:
        The folder as an absolute path.

    Raises:
        DataError: the chosen folder does not exist, or no default folder exists (the message says how to
            set one).
    """
    if option is not None and str(option) != "":
        path = Path(option).expanduser()
        if not path.is_dir():
            raise DataError(f"{path}: GTSRB data folder not found (given as the data-dir option)")
        return path.resolve()
    env = os.environ.get(ENV_VAR, "")
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DataError(f"{path}: GTSRB data folder not found (from ${ENV_VAR})")
        return path.resolve()
    candidates = [Path.cwd() / DEFAULT_RELATIVE, repo_root() / DEFAULT_RELATIVE]
    for path in candidates:
        if path.is_dir():
            return path.resolve()
    looked = " and ".join(str(p.resolve()) for p in candidates)
    raise DataError(f"GTSRB data folder not found (looked in {looked}); pass --data-dir or set ${ENV_VAR}")
