"""What a run trains and evaluates on: the training split, its validation tracks, the test split and the
annotated sign boxes of the alignment loss, all chosen by the run's config (:class:`TrainConfig`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from training.config import TrainConfig
from training.errors import ConfigError


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
    return split_by_track(split.track_uid, config.data.val_fraction, val_seed(config))


def val_seed(config: TrainConfig) -> int:
    """The seed of the validation tracks: ``data.val_seed``, else ``run.seed``."""
    return config.run.seed if config.data.val_seed is None else config.data.val_seed


def alignment_boxes(split: Any, config: TrainConfig) -> torch.Tensor | None:
    """(N, 4) float32 annotated sign boxes of the training split for the alignment loss; None for
    ``align_target = "identity"``, whose target does not depend on the image."""
    if config.optim.align_target != "roi":
        return None
    if split.roi50 is None:
        raise ConfigError(
            f"optim.align_weight = {config.optim.align_weight} with align_target = 'roi' needs the annotated "
            f"sign boxes (roi50), which {split.source} does not carry: use the packed GTSRB arrays"
        )
    return torch.from_numpy(np.ascontiguousarray(split.roi50))
