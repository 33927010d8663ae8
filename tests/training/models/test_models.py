"""Every model type x warp type: shapes, identity at initialization, training steps, finite gradients."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from training import geometry
from training.errors import ConfigError, ShapeError
from training.models import ModelConfig, build_model, count_parameters
from training.models.common import standardize
from training.models.config import MODEL_TYPES, WARP_TYPES, crop_size


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)


def _train_steps(model: nn.Module, images: Tensor, labels: Tensor, steps: int) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        init = geometry.perturbation_warps(images.shape[0], generator=gen)
        out = model(images, init)
        loss = nn.functional.cross_entropy(out.logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("warp_type", WARP_TYPES)
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_trains_with_finite_gradients_and_starts_at_identity(
    model_type: str, warp_type: str, real_batch: tuple[Tensor, Tensor]
) -> None:
    images, labels = real_batch
    images, labels = images[:8], labels[:8]
    cfg = ModelConfig(
        model_type=model_type, arch="paper", warp_type=warp_type, sampler="linearized", warp_n=2
    )
    model = build_model(cfg)
    init = geometry.perturbation_warps(8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        clean = model(images)
        perturbed = model(images, init)
    # zero-initialized localisation: the warp is exactly the initial warp (identity when none is given)
    torch.testing.assert_close(clean.warp, torch.eye(3).expand(8, 3, 3), rtol=0, atol=1e-7)
    torch.testing.assert_close(perturbed.warp, init, rtol=0, atol=1e-6)
    assert clean.logits.shape == (8, 43)
    assert clean.crop.shape == (8, 3, 36, 36)

    _train_steps(model, images, labels, steps=2)  # after one step the localisation's last layer is non-zero
    model.zero_grad()
    out = model(images, init)
    nn.functional.cross_entropy(out.logits, labels).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
    if model_type != "cnn":
        loc_grads = [p.grad for p in model.localisation_parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in loc_grads), "localisation gets no gradient"
        assert not torch.allclose(out.warp, init), "the trained transformer still predicts the initial warp"


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_large_arch_every_type(model_type: str, real_batch: tuple[Tensor, Tensor]) -> None:
    images, labels = real_batch
    model = build_model(ModelConfig(model_type=model_type, arch="large", sampler="bilinear", warp_n=2))
    _train_steps(model, images[:8], labels[:8], steps=2)
    model.eval()
    with torch.no_grad():
        out = model(images[:4])
    assert out.logits.shape == (4, 43) and torch.isfinite(out.logits).all()


@pytest.mark.parametrize("rate", [1, 2, 4, 8])
@pytest.mark.parametrize("model_type", ["cnn", "stn", "icstn", "stn-c", "stn-sl"])
def test_downsampling_rates(model_type: str, rate: int, real_batch: tuple[Tensor, Tensor]) -> None:
    images, _ = real_batch
    model = build_model(ModelConfig(model_type=model_type, arch="paper", downsampling_rate=rate, warp_n=1))
    with torch.no_grad():
        out = model(images[:2])
    s = crop_size(rate)
    assert s == {1: 36, 2: 18, 4: 9, 8: 5}[rate]
    assert out.crop.shape == (2, 3, s, s)
    assert out.logits.shape == (2, 43)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_poster_arch_every_type_at_every_rate(model_type: str, real_batch: tuple[Tensor, Tensor]) -> None:
    images, labels = real_batch
    for rate in (1, 8):
        model = build_model(
            ModelConfig(
                model_type=model_type, arch="poster", downsampling_rate=rate, sampler="bilinear", warp_n=2
            )
        )
        _train_steps(model, images[:8], labels[:8], steps=2)
        with torch.no_grad():
            out = model.eval()(images[:4])
        assert out.logits.shape == (4, 43) and torch.isfinite(out.logits).all()
        assert out.crop.shape[-1] == crop_size(rate)


def test_poster_classifiers_match_the_quoted_sizes() -> None:
    """Jiang et al. quote 966k / 246k / 61k / 19k classifier parameters at 1x / 2x / 4x / 8x."""
    quoted = {1: 966_000, 2: 246_000, 4: 61_000, 8: 19_000}
    for rate, size in quoted.items():
        for model_type in ("cnn", "stn", "icstn"):
            model = build_model(ModelConfig(model_type=model_type, arch="poster", downsampling_rate=rate))
            n = count_parameters(model.classifier)
            assert abs(n - size) / size < 0.12, (model_type, rate, n)


def test_paper_networks_have_about_200k_parameters() -> None:
    for model_type in ("cnn", "stn", "icstn"):
        n = count_parameters(build_model(ModelConfig(model_type=model_type, arch="paper")))
        assert 150_000 < n < 250_000, (model_type, n)


def test_identity_crop_is_the_central_box_in_0_255(real_batch: tuple[Tensor, Tensor]) -> None:
    """At r = 1 the identity samples exactly the pixel centres of the box [7, 43]^2 (bilinear, eval mode)."""
    images, _ = real_batch
    model = build_model(ModelConfig(model_type="stn", arch="paper", sampler="bilinear")).eval()
    with torch.no_grad():
        out = model(images)
    torch.testing.assert_close(out.crop, images[:, :, 7:43, 7:43], rtol=0, atol=2e-3)


def test_standardize_per_image_and_channel(real_batch: tuple[Tensor, Tensor]) -> None:
    images, _ = real_batch
    x, mean, std = standardize(images)
    torch.testing.assert_close(x.mean(dim=(2, 3)), torch.zeros(16, 3), rtol=0, atol=1e-4)
    torch.testing.assert_close(x.std(dim=(2, 3), unbiased=False), torch.ones(16, 3), rtol=0, atol=1e-3)
    torch.testing.assert_close(x * std + mean, images, rtol=0, atol=1e-3)


class _ConstantParams(nn.Module):
    """A stand-in localisation network predicting fixed parameters for every image."""

    def __init__(self, params: Tensor) -> None:
        super().__init__()
        self.params = params

    def forward(self, x: Tensor) -> Tensor:
        return self.params.expand(x.shape[0], -1)


def test_icstn_composes_recurrent_warps(real_batch: tuple[Tensor, Tensor]) -> None:
    images, _ = real_batch
    images = images[:3]
    init = geometry.perturbation_warps(3, generator=torch.Generator().manual_seed(3))
    model = build_model(ModelConfig(model_type="icstn", arch="paper", warp_n=3, sampler="bilinear")).eval()
    dp = torch.tensor([[0.02, -0.01, 0.05, 0.01, -0.03, -0.04, 0.01, 0.02]])
    model.localisation = _ConstantParams(dp)
    m = geometry.params_to_matrix(dp, "homography")
    with torch.no_grad():
        out = model(images, init)
    expected = geometry.normalize(init @ m @ m @ m)
    torch.testing.assert_close(out.warp, expected, rtol=0, atol=1e-5)


def test_icstn_step_with_the_inverse_returns_the_identity(real_batch: tuple[Tensor, Tensor]) -> None:
    """A predictor that outputs the inverse of the perturbation brings every crop back to the central box."""
    images, _ = real_batch
    init = geometry.perturbation_warps(1, generator=torch.Generator().manual_seed(4))
    model = build_model(ModelConfig(model_type="icstn", arch="paper", warp_n=1, sampler="bilinear")).eval()
    model.localisation = _ConstantParams(geometry.matrix_to_params(geometry.invert(init), "homography"))
    with torch.no_grad():
        out = model(images[:1], init)
    torch.testing.assert_close(out.warp, torch.eye(3).unsqueeze(0), rtol=0, atol=1e-5)
    torch.testing.assert_close(out.crop, images[:1, :, 7:43, 7:43], rtol=0, atol=0.05)


def test_bad_inputs_raise_shape_errors() -> None:
    model = build_model(ModelConfig(model_type="stn", arch="paper"))
    with pytest.raises(ShapeError, match=r"\(B, 3, 50, 50\)"):
        model(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ShapeError, match="floating"):
        model(torch.zeros(2, 3, 50, 50, dtype=torch.uint8))
    with pytest.raises(ShapeError, match="init_warp"):
        model(torch.zeros(2, 3, 50, 50), torch.eye(3).expand(3, 3, 3))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("model_type", "vit"),
        ("arch", "huge"),
        ("warp_type", "spline"),
        ("sampler", "magic"),
        ("downsampling_rate", 3),
        ("warp_n", 0),
        ("eval_forward", "nearest"),
    ],
)
def test_model_config_rejects_bad_values(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"model.{key}"):
        ModelConfig(**{key: value})  # type: ignore[arg-type]


def test_model_config_round_trip() -> None:
    cfg = ModelConfig(model_type="icstn", warp_type="affine", downsampling_rate=4, warp_n=2)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown model config key"):
        ModelConfig.from_dict({**cfg.to_dict(), "depth": 3})


@pytest.mark.parametrize("model_type", ["stn", "icstn"])
def test_full_loc_input_sees_the_crop_at_36_px_while_the_output_is_downsampled(
    model_type: str, real_batch: tuple[Tensor, Tensor]
) -> None:
    images, labels = real_batch
    seen: list[tuple[int, ...]] = []
    for loc_input, expected in (("full", 36), ("output", 5)):
        config = ModelConfig(
            model_type=model_type, arch="paper", downsampling_rate=8, warp_n=2, loc_input=loc_input
        )
        assert config.loc_size == expected
        model = build_model(config)
        hook = model.localisation.register_forward_pre_hook(
            lambda _m, args: seen.append(tuple(args[0].shape))
        )
        _train_steps(model, images[:8], labels[:8], steps=1)
        hook.remove()
        assert seen[-1][-2:] == (expected, expected)
        with torch.no_grad():
            assert model.eval()(images[:2]).crop.shape == (2, 3, 5, 5)


def test_loc_input_defaults_and_legacy_checkpoints() -> None:
    assert ModelConfig().loc_input == "full"
    legacy = ModelConfig(model_type="stn", downsampling_rate=4).to_dict()
    del legacy["loc_input"]  # written before the option existed: the localisation saw the crop at S
    assert ModelConfig.from_dict(legacy).loc_input == "output"
    assert ModelConfig(model_type="stn-sl", downsampling_rate=4).loc_size == 9  # shares the classifier's stem
    with pytest.raises(ConfigError):
        ModelConfig(loc_input="half")
