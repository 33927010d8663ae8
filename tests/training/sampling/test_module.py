"""``GridSampler``: random in training, deterministic in eval; the "expected" eval forward against the mean of
many stochastic forwards on real images; ONNX export of the deterministic forwards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.errors import ConfigError
from training.sampling import GridSampler, expected_linearized_sample, grid_sample
from training.sampling.diagnostics import crop_grid


def rotated_crop_grid(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """(n, size, size, 2): the canonical crop, rotated up to +-0.3 rad and shifted up to 5 pixels."""
    gen = torch.Generator().manual_seed(seed)
    angle = (torch.rand(n, generator=gen) - 0.5) * 0.6
    cos, sin = torch.cos(angle), torch.sin(angle)
    base = crop_grid(torch.zeros(n, 2), size)
    rotated = torch.stack(
        (
            cos.view(-1, 1, 1) * base[..., 0] - sin.view(-1, 1, 1) * base[..., 1],
            sin.view(-1, 1, 1) * base[..., 0] + cos.view(-1, 1, 1) * base[..., 1],
        ),
        dim=-1,
    )
    return rotated + (torch.rand(n, 1, 1, 2, generator=gen) - 0.5) * 0.4


def test_train_mode_is_random_and_eval_mode_deterministic(gtsrb_images: torch.Tensor) -> None:
    x, grid = gtsrb_images[:2], rotated_crop_grid(2, 9)
    sampler = GridSampler("linearized")
    assert sampler.training and sampler.inference_forward == "bilinear"
    torch.manual_seed(0)
    first, second = sampler(x, grid), sampler(x, grid)
    assert not torch.equal(first, second)

    sampler.eval()
    assert torch.equal(sampler(x, grid), F.grid_sample(x, grid, align_corners=False))
    expected = GridSampler("linearized", eval_forward="expected").eval()
    assert expected.inference_forward == "expected"
    assert torch.equal(expected(x, grid), expected(x, grid))
    assert torch.equal(expected(x, grid), expected_linearized_sample(x, grid))


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic", "multiscale"])
def test_other_modes_are_themselves_in_both_modes(mode: str, gtsrb_images: torch.Tensor) -> None:
    x, grid = gtsrb_images[:2], rotated_crop_grid(2, 9)
    sampler = GridSampler(mode, "border", align_corners=True)
    assert sampler.inference_forward == mode
    reference = grid_sample(x, grid, mode, "border", True)
    assert torch.equal(sampler(x, grid), reference)
    assert torch.equal(sampler.eval()(x, grid), reference)


def test_exact_forward_module_and_bad_options() -> None:
    x = torch.rand(1, 3, 12, 12)
    grid = rotated_crop_grid(1, 5)
    sampler = GridSampler("linearized", exact_forward=True)
    assert torch.equal(sampler(x, grid), F.grid_sample(x, grid, align_corners=False))
    with pytest.raises(ConfigError, match="eval_forward"):
        GridSampler("linearized", eval_forward="mean")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="mode"):
        GridSampler("trilinear")
    with pytest.raises(ConfigError, match="num_samples"):
        GridSampler(num_samples=2)


@pytest.mark.parametrize(("size", "padding_mode"), [(36, "zeros"), (9, "border"), (5, "reflection")])
def test_expected_forward_is_the_mean_of_stochastic_forwards(
    size: int, padding_mode: str, gtsrb_images: torch.Tensor
) -> None:
    """The Monte Carlo mean of M stochastic forwards has a per-pixel standard error ``se = std / sqrt(M)``.

    An unbiased estimate would give ``mean |expected - mc| ~ 0.8 se``. The expected forward is exact to second
    order in the offsets only: its residual bias, measured with M = 2048 on these images, is about 0.0015 on
    the [0, 1] scale (0.4 of a grey level), i.e. 1 to 1.6 se at M = 256. So allow 2.5 se and 1 grey level (a
    wrong Gaussian width or padding gives several times more), and require it to be at least 8x closer to the
    mean than exact bilinear (measured 11x to 20x at M = 256).
    """
    x = gtsrb_images[:4].double()
    grid = rotated_crop_grid(4, size, seed=size).double()
    draws = 256
    gen = torch.Generator().manual_seed(size)
    samples = torch.stack(
        [grid_sample(x, grid, "linearized", padding_mode, generator=gen) for _ in range(draws)]
    )
    mc_mean = samples.mean(0)
    standard_error = float(samples.std(0).mean()) / draws**0.5
    expected = expected_linearized_sample(x, grid, padding_mode)
    bilinear = F.grid_sample(x, grid, "bilinear", padding_mode, align_corners=False)
    error = float((expected - mc_mean).abs().mean())
    bilinear_error = float((bilinear - mc_mean).abs().mean())
    assert error < 2.5 * standard_error and error < 1 / 255, (error, standard_error)
    assert error < bilinear_error / 8, (error, bilinear_error)


def _export(module: torch.nn.Module, x: torch.Tensor, grid: torch.Tensor, path: Path) -> bytes:
    torch.onnx.export(
        module,
        (x, grid),
        path,
        dynamo=False,
        opset_version=17,
        input_names=["image", "grid"],
        output_names=["out"],
        dynamic_axes={"image": {0: "n"}, "grid": {0: "n"}, "out": {0: "n"}},
    )
    return path.read_bytes()


class _Wrapper(torch.nn.Module):
    def __init__(self, sampler: GridSampler) -> None:
        super().__init__()
        self.sampler = sampler

    def forward(self, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        return self.sampler(x, grid)


STANDARD_OPS = {
    "Abs",
    "Add",
    "AveragePool",
    "Cast",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "Gather",
    "GridSample",
    "Log",
    "Max",
    "Mul",
    "Pad",
    "ReduceSum",
    "Relu",
    "Reshape",
    "Slice",
    "Sub",
    "Transpose",
    "Unsqueeze",
}


@pytest.mark.parametrize(
    ("mode", "eval_forward", "padding_mode", "align_corners"),
    [
        ("linearized", "bilinear", "zeros", False),
        ("linearized", "expected", "zeros", False),
        ("linearized", "expected", "reflection", False),
        ("linearized", "expected", "border", True),
        ("multiscale", "bilinear", "zeros", False),
        ("multiscale", "bilinear", "reflection", True),
    ],
)
def test_eval_forwards_export_to_onnx(
    mode: str,
    eval_forward: str,
    padding_mode: str,
    align_corners: bool,
    gtsrb_images: torch.Tensor,
    tmp_path: Path,
) -> None:
    import onnx
    import onnxruntime

    sampler = GridSampler(mode, padding_mode, align_corners, eval_forward=eval_forward)  # type: ignore[arg-type]
    module = _Wrapper(sampler).eval()
    model = _export(module, gtsrb_images[:2], rotated_crop_grid(2, 9), tmp_path / "sampler.onnx")
    proto = onnx.load_from_string(model)
    onnx.checker.check_model(proto)
    assert {node.op_type for node in proto.graph.node} <= STANDARD_OPS
    assert proto.opset_import[0].version == 17
    # A different batch size than at export: the batch is dynamic.
    x, grid = gtsrb_images[2:7], rotated_crop_grid(5, 9, seed=3)
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"image": x.numpy(), "grid": grid.numpy()})
    np.testing.assert_allclose(out, module(x, grid).detach().numpy(), rtol=0, atol=1e-5)
