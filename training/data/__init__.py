"""GTSRB data: packed 50x50 arrays, the official directory layout, splits by track.

Imports numpy and Pillow only (no torch); :mod:`training.data.tensors` (the images as torch tensors, for the
sampler tests and benchmarks) is the one torch module, and it is not imported here.
"""

from training.data.classes import load_class_names
from training.data.dataset import NUM_CLASSES, GtsrbSplit
from training.data.load import load_gtsrb
from training.data.location import resolve_data_dir
from training.data.official import load_official_test, load_official_training
from training.data.packed import load_packed
from training.data.resize import NETWORK_INPUT_SIZE, RESIZE_METHOD, resize_to_network_input
from training.data.tracks import split_by_track

__all__ = [
    "NETWORK_INPUT_SIZE",
    "NUM_CLASSES",
    "RESIZE_METHOD",
    "GtsrbSplit",
    "load_class_names",
    "load_gtsrb",
    "load_official_test",
    "load_official_training",
    "load_packed",
    "resize_to_network_input",
    "resolve_data_dir",
    "split_by_track",
]
