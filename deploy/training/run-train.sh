#!/bin/sh
# What torchrun starts on every node, for every worker, and again after each elastic restart:
# `python -m training train`, resumed from the run's checkpoint when one exists, so that a job whose pod or
# process died continues from its last completed epoch instead of starting over.
#   torchrun ... --no-python sh deploy/training/run-train.sh --config training/configs/stn-large.toml ...
# TRAIN_OUT: the run folder on storage every node shares (rank 0 writes it, every rank reads the checkpoint).
set -eu
out="${TRAIN_OUT:?set TRAIN_OUT to the run folder}"
if [ -f "$out/checkpoint.pt" ]; then
  set -- --resume "$out/checkpoint.pt" "$@"
fi
exec python -m training train --out "$out" "$@"
