"""The one resize that turns a whole sign image into the network's 50x50 input.

The packed GTSRB arrays were made with exactly this call (Pillow, ``convert("RGB")`` then
``resize((50, 50), Image.Resampling.BILINEAR)``, aspect ratio not kept), the official-layout loaders use it,
and the service must use the same method: export copies :data:`RESIZE_METHOD` into ``model.json`` so that
served predictions do not drift from tested ones (train/serve skew).
"""

from __future__ import annotations

from typing import Final

import numpy as np
from PIL import Image

from training.conventions import FRAME_SIZE, RESIZE_METHOD

__all__ = ["NETWORK_INPUT_SIZE", "RESIZE_METHOD", "resize_to_network_input"]

NETWORK_INPUT_SIZE: Final = FRAME_SIZE
"""Side of the network's square input frame in pixels (:data:`training.conventions.FRAME_SIZE`)."""


def resize_to_network_input(img: Image.Image) -> np.ndarray:
    """Convert a whole image to RGB and resize it to the 50x50 network frame.

    Pillow's bilinear filter widens its support when it shrinks an image, so it anti-aliases; images smaller
    than 50 px are upsampled. The aspect ratio is not kept (no crop, no padding).

    Args:
        img: any Pillow image (any mode, any size).

    Returns:
        (50, 50, 3) uint8 array, RGB, HWC.
    """
    rgb = img.convert("RGB")
    resized = rgb.resize((NETWORK_INPUT_SIZE, NETWORK_INPUT_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)
