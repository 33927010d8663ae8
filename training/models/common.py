"""Pieces every model shares: the output tuple, per-image standardization, the warp sampler, the base class.

Conventions (see training/geometry.py): a warp is a (B, 3, 3) matrix mapping canonical *output* coordinates
to canonical *input* coordinates (inverse mapping), the canonical crop box [7, 43]^2 of the 50x50 frame is
[-1, 1]^2, one canonical unit is 18 px, x right, y down. Sampling grids use ``align_corners=False``.
"""

from __future__ import annotations

from typing import Any, NamedTuple, cast

import torch
from torch import Tensor, nn

from training import geometry
from training.errors import ShapeError
from training.models.config import FRAME_SIZE, ModelConfig
from training.sampling import GridSampler

_EPS = 1e-5


class ModelOutput(NamedTuple):
    """What every model returns.

    Attributes:
        logits: (B, num_classes) class scores.
        warp: (B, 3, 3) final warp, canonical convention (canonical crop -> canonical input coordinates).
        crop: (B, 3, S, S) the image sampled through ``warp``, in the input's 0..255 scale.
    """

    logits: Tensor
    warp: Tensor
    crop: Tensor


def standardize(image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Standardize each image per channel over its own pixels.

    Args:
        image: (B, C, H, W) float, any scale (0..255 for the models).

    Returns:
        ``(x, mean, std)`` with x (B, C, H, W) of zero mean and unit variance per image and channel, and mean,
        std (B, C, 1, 1) such that ``image = x * std + mean`` (std includes a 1e-5 floor against flat images).
    """
    mean = image.mean(dim=(2, 3), keepdim=True)
    centred = image - mean
    std = torch.sqrt((centred * centred).mean(dim=(2, 3), keepdim=True) + _EPS)
    return centred / std, mean, std


def check_image(image: Tensor) -> None:
    """Raise :class:`ShapeError` unless ``image`` is a float (B, 3, 50, 50) tensor."""
    if (
        image.dim() != 4
        or image.shape[1] != 3
        or image.shape[2] != FRAME_SIZE
        or image.shape[3] != FRAME_SIZE
    ):
        raise ShapeError(f"image: expected (B, 3, {FRAME_SIZE}, {FRAME_SIZE}), got {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ShapeError(f"image: expected a floating-point tensor (0..255), got {image.dtype}")


def zero_init(layer: nn.Linear) -> nn.Linear:
    """Zero the weight and bias of a localisation network's last layer, so its warp starts at the identity."""
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _full_precision(like: Tensor) -> torch.autocast:
    """A context that disables autocast on ``like``'s device type (geometry stays float32 under AMP)."""
    return torch.autocast(device_type=like.device.type, enabled=False)


class WarpSampler(nn.Module):
    """Samples an S x S crop of a 50x50-frame tensor through a canonical warp.

    Wraps :class:`training.sampling.GridSampler` (stochastic in train mode for the linearized mode,
    deterministic in eval mode) with :func:`training.geometry.sampling_grid` (``align_corners=False``, zeros
    padding).
    """

    def __init__(self, config: ModelConfig, out_size: int | None = None, extent: float = 1.0) -> None:
        super().__init__()
        self.out_size = config.crop_size if out_size is None else out_size
        self.extent = extent  # half-side of the sampled region, canonical units (1 = the crop)
        self.sampler = GridSampler(
            mode=config.sampler,
            padding_mode="zeros",
            align_corners=False,
            eval_forward=cast(Any, config.eval_forward),
            num_samples=config.num_samples,
        )

    def forward(self, feature: Tensor, warp: Tensor) -> Tensor:
        """Sample ``feature`` (B, C, 50, 50) through ``warp`` (B, 3, 3, canonical) -> (B, C, S, S).

        Runs in float32 with autocast disabled (grids in bf16/fp16 would be off by a fraction of a pixel).
        """
        with _full_precision(feature):
            grid = geometry.sampling_grid(warp.float(), self.out_size, frame=FRAME_SIZE, extent=self.extent)
            out: Tensor = self.sampler(feature.float(), grid)
        return out


class TransformerClassifier(nn.Module):
    """Base class: ``forward(image50, init_warp) -> ModelOutput``; subclasses implement :meth:`transform`.

    The forward standardizes the image (inside the graph, so the exported ONNX model takes raw 0..255 pixels),
    computes the final warp and the classifier logits, and returns the crop in the 0..255 scale.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.warp_sampler = WarpSampler(config)
        # A second sampler only where the localisation network sees another size than the classifier.
        self.loc_sampler: WarpSampler | None = None
        if config.loc_size != config.crop_size or config.loc_context != 1.0:
            self.loc_sampler = WarpSampler(config, config.loc_size, extent=config.loc_context)
        self.register_buffer("eye", torch.eye(3), persistent=False)

    def identity(self, batch_like: Tensor) -> Tensor:
        """(B, 3, 3) identity warps for the batch of ``batch_like`` (traced with a dynamic batch size)."""
        eye = self.get_buffer("eye")
        return eye.to(batch_like.dtype).unsqueeze(0).expand(batch_like.shape[0], 3, 3)

    def sample(self, feature: Tensor, warp: Tensor) -> Tensor:
        """Sample ``feature`` (B, C, 50, 50) through ``warp`` (B, 3, 3) -> (B, C, S, S)."""
        out: Tensor = self.warp_sampler(feature, warp)
        return out

    def sample_for_localisation(self, feature: Tensor, warp: Tensor) -> Tensor:
        """Sample ``feature`` (B, C, 50, 50) through ``warp`` for the localisation network -> (B, C, L, L),
        L = ``config.loc_size`` (36 with ``loc_input="full"``, else S), covering ``config.loc_context``
        canonical units on each side of the crop's centre."""
        sampler = self.warp_sampler if self.loc_sampler is None else self.loc_sampler
        out: Tensor = sampler(feature, warp)
        return out

    def refine(self, warp: Tensor, params: Tensor) -> Tensor:
        """``warp o dp`` with dp = ``params_to_matrix(params)`` (``geometry.compose(warp, dp)``), in float32.

        Args:
            warp: (B, 3, 3) current canonical warp.
            params: (B, d) localisation output (the warp type's parameters; zero = identity).

        Returns:
            (B, 3, 3) canonical warp, ``[:, 2, 2] == 1``.
        """
        with _full_precision(params):
            dp = geometry.params_to_matrix(params.float(), self.config.warp_type)
            return geometry.compose(warp.float(), dp)

    def transform(self, x: Tensor, init_warp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Subclass hook.

        Args:
            x: (B, 3, 50, 50) standardized image.
            init_warp: (B, 3, 3) initial warp (canonical).

        Returns:
            ``(logits (B, K), warp (B, 3, 3), crop (B, 3, S, S) standardized)``.
        """
        raise NotImplementedError

    def localisation_parameters(self) -> list[nn.Parameter]:
        """Parameters that only predict the warp (their learning rate may be scaled); empty for ``cnn``."""
        return []

    def warp_head(self) -> nn.Linear | None:
        """The localisation network's last (zero-initialized) linear layer; None for ``cnn``."""
        loc = getattr(self, "localisation", None)
        if isinstance(loc, nn.Sequential) and isinstance(loc[-1], nn.Linear):
            return loc[-1]
        return None

    def forward(self, image: Tensor, init_warp: Tensor | None = None) -> ModelOutput:
        """Classify a batch.

        Args:
            image: (B, 3, 50, 50) float RGB, 0..255, the whole sign image resized to 50x50.
            init_warp: (B, 3, 3) initial warp in the canonical convention (the IC-STN perturbation in
                training); None means the identity (the central 36x36 box: the service case).

        Returns:
            :class:`ModelOutput` (logits (B, K), warp (B, 3, 3) canonical, crop (B, 3, S, S) in 0..255).
        """
        check_image(image)
        x, mean, std = standardize(image)
        if init_warp is None:
            init = self.identity(x)
        else:
            if init_warp.dim() != 3 or init_warp.shape[1:] != (3, 3) or init_warp.shape[0] != image.shape[0]:
                raise ShapeError(
                    f"init_warp: expected ({image.shape[0]}, 3, 3), got {tuple(init_warp.shape)}"
                )
            init = init_warp.to(x.dtype)
        logits, warp, crop = self.transform(x, init)
        return ModelOutput(logits, warp, crop * std + mean)


class ExportModule(nn.Module):
    """What the ONNX graph runs: ``image -> (logits, warp in 50x50 pixel frame, crop in 0..255)``.

    ``warp`` is converted with :func:`training.geometry.to_pixel_frame` (docs/model-bundle.md: maps
    50x50-frame pixel coordinates of the canonical crop, pixel edges at integers, to input pixel coordinates).
    """

    def __init__(self, model: TransformerClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """image (N, 3, 50, 50) 0..255 -> logits (N, K), warp (N, 3, 3) pixel frame, crop (N, 3, S, S)."""
        out = self.model(image)
        return out.logits, geometry.to_pixel_frame(out.warp), out.crop
