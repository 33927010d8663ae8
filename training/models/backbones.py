"""Classifier and localisation networks of the two architecture sizes, for an S x S input.

``paper``: the IC-STN traffic-sign networks (Lin & Lucey 2017, traffic-sign code): 7x7 VALID convolutions
at S = 36; the classifier behind a transformer is conv(6) conv(12) maxpool fc(43), the transformer-less
baseline is the larger conv(6) conv(12) maxpool conv(24) fc(200) fc(43) so both total about 200k parameters,
and the geometric predictor is conv(6) conv(24) fc(warp dims). At S < 36 (downsampling rate r > 1) the 7x7
VALID convolutions do not fit, so they become 3x3 convolutions with padding 1 (widths unchanged; the fully
connected sizes follow from S).

``poster``: classifiers sized like those of Jiang et al.'s GTSRB table (linearized multi-sampling, issue 5),
which quotes 966k / 246k / 61k / 19k classifier parameters at 1x / 2x / 4x / 8x but not the layers. The count
grows as S^2 (about 745 parameters per crop pixel), the signature of a fully connected layer on a
full-resolution feature map; ours is conv3x3(16) conv3x3(17) (padding 1, so the map stays S x S) and
fc(17 S^2 -> 43): 950k / 240k / 62k / 21k parameters. The same classifier serves the transformer-less
baseline, and the localisation network is the ``paper`` one.

``large``: the served default, three stages of two 3x3 conv+BN+ReLU at widths 32/64/128 with 2x2 max pooling
between stages, global average pooling and one linear layer; its localisation network is three conv+BN+ReLU
layers (16/32/64) with pooling, fc(128), fc(warp dims).

Every localisation network ends in a zero-initialized linear layer, so the predicted warp starts at the
identity.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from training.conventions import WARP_DIMS
from training.models.common import zero_init


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)
    )


def _paper_kernel(size: int) -> tuple[int, int]:
    """(kernel, padding) of the paper networks' convolutions for an input of side ``size``."""
    return (7, 0) if size >= 36 else (3, 1)


def _flat_features(module: nn.Module, channels: int, size: int) -> int:
    """Number of features ``module`` outputs, flattened, for one (channels, size, size) input."""
    with torch.no_grad():
        return int(module(torch.zeros(1, channels, size, size)).flatten(1).shape[1])


def _pool_if(size: int) -> list[nn.Module]:
    return [nn.MaxPool2d(2)] if size >= 4 else []


class Classifier(nn.Module):
    """``body(stem(x))``: ``stem`` is the first convolution layers (reused by STN-C and STN-SL).

    Attributes:
        stem_channels: channels of the stem's output.
    """

    def __init__(self, stem: nn.Module, body: nn.Module, stem_channels: int) -> None:
        super().__init__()
        self.stem = stem
        self.body = body
        self.stem_channels = stem_channels

    def forward(self, x: Tensor) -> Tensor:
        """x (B, 3, S, S) standardized -> logits (B, K)."""
        out: Tensor = self.body(self.stem(x))
        return out


def build_classifier(
    arch: str,
    size: int,
    num_classes: int,
    *,
    dropout: float = 0.0,
    full: bool = False,
    same_stem: bool = False,
) -> Classifier:
    """The classifier for an S x S input.

    Args:
        arch: ``paper``, ``poster`` or ``large``.
        size: S, the side of the input crop.
        num_classes: K.
        dropout: dropout before the last linear layer (``large``, ``poster``).
        full: the paper's larger transformer-less baseline (``cnn`` with ``paper``; ``poster`` has one
            classifier for every model).
        same_stem: pad the stem so it keeps the spatial size (STN-C runs it on the 50x50 frame before
            sampling).

    Returns:
        a :class:`Classifier` mapping (B, 3, S, S) -> (B, K).
    """
    if arch == "large":
        stem = nn.Sequential(_conv_bn_relu(3, 32), _conv_bn_relu(32, 32))
        layers: list[nn.Module] = [*_pool_if(size), _conv_bn_relu(32, 64), _conv_bn_relu(64, 64)]
        layers += [*_pool_if(size // 2), _conv_bn_relu(64, 128), _conv_bn_relu(128, 128)]
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(128, num_classes)]
        return Classifier(stem, nn.Sequential(*layers), 32)
    if arch == "poster":
        stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(True))
        body = nn.Sequential(
            nn.Conv2d(16, 17, 3, padding=1),
            nn.ReLU(True),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(17 * size * size, num_classes),
        )
        return Classifier(stem, body, 16)
    if arch != "paper":
        raise ValueError(f"unknown arch {arch!r}")
    k, pad = _paper_kernel(size)
    stem = nn.Sequential(nn.Conv2d(3, 6, k, padding=k // 2 if same_stem else pad), nn.ReLU(True))
    stem_size = size if same_stem else size - k + 1 + 2 * pad
    convs: list[nn.Module] = [nn.Conv2d(6, 12, k, padding=pad), nn.ReLU(True)]
    conv_size = stem_size - k + 1 + 2 * pad
    convs += _pool_if(conv_size)
    if full:
        convs += [nn.Conv2d(12, 24, k, padding=pad), nn.ReLU(True)]
    features = nn.Sequential(*convs, nn.Flatten())
    n = _flat_features(features, 6, stem_size)
    head: list[nn.Module] = (
        [nn.Linear(n, 200), nn.ReLU(True), nn.Linear(200, num_classes)]
        if full
        else [nn.Linear(n, num_classes)]
    )
    return Classifier(stem, nn.Sequential(features, *head), 6)


def build_localisation(arch: str, in_channels: int, size: int, warp_type: str) -> nn.Sequential:
    """The localisation network (geometric predictor): (B, C, S, S) -> warp parameters (B, d).

    Its last linear layer is zero-initialized, so the parameters, and hence the warp, start at exactly zero
    (identity; see :func:`training.geometry.params_to_matrix`).

    Args:
        arch: ``paper`` or ``large``.
        in_channels: C (3 for images, more for feature maps).
        size: S, the input's side.
        warp_type: selects d = 2, 4, 6 or 8.
    """
    dims = WARP_DIMS[warp_type]
    if arch == "large":
        layers: list[nn.Module] = []
        c, s = in_channels, size
        for width in (16, 32, 64):
            layers += [_conv_bn_relu(c, width), *_pool_if(s)]
            c, s = width, (s // 2 if s >= 4 else s)
        features = nn.Sequential(*layers, nn.Flatten())
        n = _flat_features(features, in_channels, size)
        return nn.Sequential(features, nn.Linear(n, 128), nn.ReLU(True), zero_init(nn.Linear(128, dims)))
    if arch not in ("paper", "poster"):
        raise ValueError(f"unknown arch {arch!r}")
    k, pad = _paper_kernel(size)
    features = nn.Sequential(
        nn.Conv2d(in_channels, 6, k, padding=pad),
        nn.ReLU(True),
        nn.Conv2d(6, 24, k, padding=pad),
        nn.ReLU(True),
        nn.Flatten(),
    )
    n = _flat_features(features, in_channels, size)
    return nn.Sequential(features, zero_init(nn.Linear(n, dims)))
