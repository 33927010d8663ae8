"""The issue's comparison baseline, reproduced: a plain CNN on the whole 50x50 image, no transformer, no
perturbation (not a test; a few minutes per epoch on 2 CPU cores).

Issue 3 quotes "a plain 6-layer CNN without any transformer, trained for 4 epochs on 2 CPU cores, 0.64% clean
error" as the scale the transformer models must beat. This script trains the ``large`` classifier (six 3x3
conv+BN+ReLU layers, ``training.models.backbones``) on the whole 50x50 frame (per-image standardized, like the
models), with the training package's data loading and none of the IC-STN protocol: no canonical crop, no
perturbation, no photometric augmentation. Adam, cosine learning rate with a half-epoch warm-up, label
smoothing 0.05, seed 0. It prints the clean error on the full lossless GTSRB test set::

    .venv/bin/python -m benchmarks.whole_image_baseline --epochs 4 --threads 2
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.config import OptimConfig, TrainConfig
from training.data import load_gtsrb, resolve_data_dir
from training.models.backbones import build_classifier
from training.models.common import standardize
from training.optim import build_scheduler

NUM_CLASSES = 43


def _batches(images: np.ndarray, rows: np.ndarray, batch: int) -> Iterator[torch.Tensor]:
    """(N, 50, 50, 3) uint8 -> float (B, 3, 50, 50) batches of ``rows`` in order, one at a time."""
    for i in range(0, len(rows), batch):
        yield torch.from_numpy(images[rows[i : i + batch]]).permute(0, 3, 1, 2).float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    root = resolve_data_dir(args.data_dir)
    cache = Path(".data/cache")
    train = load_gtsrb(root, "train", cache_dir=cache)
    test = load_gtsrb(root, "test", "lossless", cache_dir=cache)
    model = build_classifier("large", 50, NUM_CLASSES)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps_per_epoch = math.ceil(len(train.labels) / args.batch_size)
    schedule = OptimConfig(lr=args.lr, epochs=args.epochs, batch_size=args.batch_size, warmup_epochs=0.5)
    scheduler = build_scheduler(
        optimizer, TrainConfig(optim=schedule), args.epochs * steps_per_epoch, steps_per_epoch
    )  # the training package's cosine schedule with its half-epoch linear warm-up
    labels = torch.as_tensor(np.asarray(train.labels), dtype=torch.long)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = rng.permutation(len(labels))
        wrong = 0
        for i, x in enumerate(_batches(train.images, order, args.batch_size)):
            y = labels[order[i * args.batch_size : i * args.batch_size + len(x)]]
            logits = model(standardize(x)[0])
            loss = F.cross_entropy(logits, y, label_smoothing=0.05)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            wrong += int((logits.argmax(1) != y).sum())
        elapsed = time.perf_counter() - start
        error = 100 * wrong / len(labels)
        print(f"epoch {epoch + 1}/{args.epochs}: train error {error:.2f}%, {elapsed:.0f} s", flush=True)
    train_s = time.perf_counter() - start
    model.eval()
    test_labels = np.asarray(test.labels)
    with torch.no_grad():
        predictions = np.concatenate(
            [
                model(standardize(x)[0]).argmax(1).numpy()
                for x in _batches(test.images, np.arange(len(test_labels)), 512)
            ]
        )
    errors, n = int((predictions != test_labels).sum()), len(test_labels)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"whole-image CNN ({params:,} parameters), {args.epochs} epochs, {args.threads} threads, "
        f"{train_s / 60:.1f} min: clean test error {100 * errors / n:.3f}% ({errors}/{n})"
    )


if __name__ == "__main__":
    main()
