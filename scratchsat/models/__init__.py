"""Models trained from random weights: ``build_model`` from a name or a :class:`ModelConfig`.

The config holds every architecture setting and is saved in ``model.json``, so a bundle
rebuilds its network without the training settings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

from torch import nn

from ..errors import InputError
from .layers import ACTIVATIONS, INITS, NORMS, check_choice, init_weights
from .resnet import DEPTHS, ResNetUNet, build_resnet
from .simple import SimpleCNN
from .unet import UNet

TASKS = ("segmentation", "classification")
MODELS = {
    "simple": "classification",
    "resnet18": "classification",
    "resnet34": "classification",
    "resnet50": "classification",
    "unet": "segmentation",
    "resnet18-unet": "segmentation",
    "resnet34-unet": "segmentation",
    "resnet50-unet": "segmentation",
}
DEFAULT_MODEL = {"segmentation": "unet", "classification": "resnet18"}
FACTORIES: dict[str, Callable[[ModelConfig], nn.Module]] = {}  # models added by register_model


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a network (weights aside)."""

    name: str
    in_channels: int
    num_classes: int
    task: str = "segmentation"
    width: int = 32  # simple, unet: channels of the first block
    depth: int | None = None  # simple: blocks (default 3); unet: poolings (default 4)
    activation: str = "relu"
    norm: str = "batch"
    init: str = "kaiming"
    small_stem: bool = True  # resnets: 3×3 stride-1 stem, no max-pool (for 32–64 px patches)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        return cls(**data)


def register_model(name: str, task: str, factory: Callable[[ModelConfig], nn.Module]) -> None:
    """Make your own network trainable and loadable by name.

    ``factory(config)`` gets the :class:`ModelConfig` (``in_channels``, ``num_classes``,
    ``width``, ``depth``, …) and returns a module mapping (N, C, H, W) to (N, K, H, W) logits
    (segmentation) or (N, K) (classification). A bundle of such a model records only the name,
    so the process that loads it must register the same name first.
    """
    check_choice("task", task, TASKS)
    if name in MODELS and name not in FACTORIES:
        raise InputError(f"{name!r} is a built-in model; register yours under another name")
    MODELS[name] = task
    FACTORIES[name] = factory


def models_for(task: str) -> list[str]:
    return [name for name, kind in MODELS.items() if kind == task]


def check_config(config: ModelConfig) -> ModelConfig:
    """Validate names and the model/task pairing; resolve ``auto`` to the task's default."""
    check_choice("task", config.task, TASKS)
    if config.name == "auto":
        config = replace(config, name=DEFAULT_MODEL[config.task])
    if config.name not in MODELS:
        raise InputError(f"unknown model {config.name!r}; known models: {', '.join(MODELS)}")
    if MODELS[config.name] != config.task:
        raise InputError(
            f"{config.name} is a {MODELS[config.name]} model but the task is {config.task}; "
            f"choose one of {', '.join(models_for(config.task))}"
        )
    check_choice("activation", config.activation, ACTIVATIONS)
    check_choice("normalisation", config.norm, NORMS)
    check_choice("init", config.init, INITS)
    if config.in_channels < 1 or config.num_classes < 1 or config.width < 1:
        raise InputError("in_channels, num_classes and width must be at least 1")
    return config


def build_model(
    name: str | ModelConfig = "auto",
    in_channels: int | None = None,
    num_classes: int | None = None,
    task: str = "segmentation",
    **options,
) -> nn.Module:
    """A network with random weights, from a :class:`ModelConfig` or a name plus settings.

    Example: ``build_model("resnet18", in_channels=13, num_classes=10, task="classification")``.
    """
    if isinstance(name, ModelConfig):
        config = name
    else:
        if in_channels is None or num_classes is None:
            raise InputError("build_model needs in_channels and num_classes")
        config = ModelConfig(name, in_channels, num_classes, task, **options)
    config = check_config(config)
    c = config
    if c.name in FACTORIES:
        model: nn.Module = FACTORIES[c.name](c)
    elif c.name == "simple":
        model = SimpleCNN(
            c.in_channels, c.num_classes, c.width, c.depth or 3, c.activation, c.norm
        )
    elif c.name == "unet":
        model = UNet(c.in_channels, c.num_classes, c.width, c.depth or 4, c.activation, c.norm)
    elif c.name.endswith("-unet"):
        model = ResNetUNet(
            c.name.removesuffix("-unet"),
            c.in_channels,
            c.num_classes,
            c.small_stem,
            c.norm,
            c.activation,
        )
    else:
        model = build_resnet(
            c.name, c.in_channels, c.num_classes, c.small_stem, c.norm, c.activation
        )
    init_weights(model, c.init)
    return model


__all__ = [
    "DEPTHS",
    "MODELS",
    "ModelConfig",
    "build_model",
    "check_config",
    "models_for",
    "register_model",
]
