"""Models: shapes for any band count and patch size, gradients everywhere, and they can learn."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from scratchsat.errors import InputError
from scratchsat.models import MODELS, ModelConfig, build_model

SMALL = {"width": 8}  # keeps the compact models fast; resnets have fixed widths


def small(name: str, in_channels: int, num_classes: int, **options):
    task = MODELS[name]
    extra = SMALL if name in ("simple", "unet") else {}
    return build_model(name, in_channels, num_classes, task, **extra, **options)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize(("bands", "size"), [(1, 32), (4, 48), (13, 64), (8, 40)])
def test_output_shapes(name, bands, size):
    model = small(name, bands, 5).eval()
    with torch.no_grad():
        out = model(torch.randn(2, bands, size, size))
    expected = (2, 5, size, size) if MODELS[name] == "segmentation" else (2, 5)
    assert out.shape == expected


@pytest.mark.parametrize("name", ["resnet18", "resnet18-unet"])
def test_large_patches_use_the_standard_stem(name):
    model = small(name, 13, 3, small_stem=False).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 13, 256, 256))
    assert out.shape[:2] == (1, 3)
    first = model.conv1 if name == "resnet18" else model.stem[0]
    assert first.kernel_size == (7, 7) and first.stride == (2, 2) and first.in_channels == 13


@pytest.mark.parametrize("name", list(MODELS))
def test_a_gradient_reaches_every_parameter(name):
    model = small(name, 3, 4)
    out = model(torch.randn(2, 3, 32, 32))
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


@pytest.mark.parametrize("name", list(MODELS))
def test_each_model_overfits_one_tiny_batch(name):
    torch.manual_seed(0)
    model = small(name, 4, 3)
    x = torch.randn(4, 4, 16, 16)
    if MODELS[name] == "segmentation":
        blocks = torch.randint(0, 3, (4, 4, 4))  # random classes in 4×4-pixel blocks
        y = blocks.repeat_interleave(4, 1).repeat_interleave(4, 2)
        y[:, :2] = 255  # ignored pixels do not count
    else:
        y = torch.tensor([0, 1, 2, 1])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(50):
        loss = F.cross_entropy(model(x), y, ignore_index=255)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = first if first is not None else loss.item()
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(1)
    keep = y != 255
    assert (pred[keep] == y[keep]).float().mean() > 0.95
    assert loss.item() < 0.2 * first


@pytest.mark.parametrize(
    "option",
    [
        {"activation": "gelu"},
        {"norm": "group"},
        {"norm": "none"},
        {"init": "xavier"},
        {"init": "orthogonal"},
        {"activation": "silu", "depth": 2},
    ],
)
@pytest.mark.parametrize("name", ["simple", "unet", "resnet18"])
def test_options_build_working_models(name, option):
    model = small(name, 6, 2, **option)
    out = model(torch.randn(2, 6, 32, 32))
    assert torch.isfinite(out).all()
    if option.get("norm") == "group":
        assert any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    if option.get("activation") == "gelu":
        assert any(isinstance(m, torch.nn.GELU) for m in model.modules())
        assert not any(isinstance(m, torch.nn.ReLU) for m in model.modules())


def test_weights_are_random_not_pretrained():
    a = build_model("resnet18", 3, 10, "classification")
    torch.manual_seed(1)
    b = build_model("resnet18", 3, 10, "classification")
    assert not torch.equal(a.conv1.weight, b.conv1.weight)


def test_config_round_trips_and_rebuilds_the_same_architecture():
    config = ModelConfig("unet", 13, 7, "segmentation", width=8, depth=3, activation="elu")
    again = ModelConfig.from_dict(config.to_dict())
    assert again == config
    shapes = [p.shape for p in build_model(again).parameters()]
    assert shapes == [p.shape for p in build_model(config).parameters()]


def test_bad_choices_list_the_allowed_values():
    with pytest.raises(InputError, match="unknown model 'vgg16'; known models: simple, resnet18"):
        build_model("vgg16", 3, 2, "classification")
    with pytest.raises(
        InputError,
        match="unet is a segmentation model but the task is "
        "classification; choose one of simple, resnet18",
    ):
        build_model("unet", 3, 2, "classification")
    with pytest.raises(InputError, match="unknown activation 'tanh'; choose one of relu, gelu"):
        build_model("simple", 3, 2, "classification", activation="tanh")
    with pytest.raises(InputError, match="unknown normalisation 'layer'; choose one of batch"):
        build_model("unet", 3, 2, "segmentation", norm="layer")


def test_a_registered_model_builds_by_name_and_random_init_applies():
    from scratchsat.models import REGISTRY, register_model

    def tiny(config):
        return torch.nn.Conv2d(config.in_channels, config.num_classes, 1)

    register_model("tiny-fcn", "segmentation", tiny)
    try:
        model = build_model("tiny-fcn", 5, 3, "segmentation")
        assert model(torch.randn(1, 5, 8, 8)).shape == (1, 3, 8, 8)
        with pytest.raises(InputError, match="tiny-fcn is a segmentation model"):
            build_model("tiny-fcn", 5, 3, "classification")
        with pytest.raises(InputError, match="'unet' is a built-in model"):
            register_model("unet", "segmentation", tiny)
    finally:
        REGISTRY.pop("tiny-fcn")
