"""Models trained from random weights: ``build_model`` from a name or a :class:`ModelConfig`.

The config holds every architecture setting and is saved in ``model.json``, so a bundle
rebuilds its network without the training settings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, fields, replace

from torch import nn

from ..errors import InputError
from ..settings import SETTINGS, ModelSettings, flat_settings
from .inputs import WithIndices, index_pairs
from .layers import ACTIVATIONS, INITS, NORMS, check_choice, init_weights
from .resnet import DEPTHS, ResNetUNet, build_resnet
from .simple import SimpleCNN
from .unet import UNet

TASKS = ("segmentation", "classification")
DEFAULT_MODEL = {"segmentation": "unet", "classification": "resnet18"}


@flat_settings("settings")
@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a network (weights aside). Settings read as attributes
    too (``config.width``); ``model.json`` stores them flat beside the other fields."""

    name: str
    in_channels: int
    num_classes: int
    task: str = "segmentation"
    small_stem: bool = True  # resnets: 3×3 stride-1 stem, no max-pool (for 32–64 px patches)
    settings: ModelSettings = ModelSettings()
    # settings.indices resolved to 0-based band positions (A, B) for these bands' order
    index_bands: tuple[tuple[int, int], ...] = ()

    @classmethod
    def of(
        cls,
        name: str,
        in_channels: int,
        num_classes: int,
        task: str = "segmentation",
        small_stem: bool = True,
        index_bands=(),
        **settings,
    ) -> ModelConfig:
        """A config from flat keyword settings (``width=8, norm="group"``)."""
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise InputError(
                f"unknown model setting {unknown[0]!r}; known settings: {', '.join(SETTINGS)}"
            )
        pairs = tuple((int(a), int(b)) for a, b in index_bands)
        return cls(
            name, in_channels, num_classes, task, small_stem, ModelSettings(**settings), pairs
        )

    def to_dict(self) -> dict:
        flat = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "settings"}
        return {**flat, **asdict(self.settings)}

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        return cls.of(**data)


@dataclass(frozen=True)
class Registered:
    task: str
    factory: Callable[[ModelConfig], nn.Module]
    builtin: bool = False


REGISTRY: dict[str, Registered] = {}  # built-in models and yours, found the same way


def register_model(
    name: str, task: str, factory: Callable[[ModelConfig], nn.Module], *, builtin: bool = False
) -> None:
    """Make your own network trainable and loadable by name (the built-ins are registered
    the same way, below).

    ``factory(config)`` gets the :class:`ModelConfig` (``in_channels``, ``num_classes``,
    ``width``, ``depth``, …) and returns a module mapping (N, C, H, W) to (N, K, H, W) logits
    (segmentation) or (N, K) (classification). A bundle of such a model records only the name,
    so the process that loads it must register the same name first.
    """
    check_choice("task", task, TASKS)
    if name in REGISTRY and REGISTRY[name].builtin and not builtin:
        raise InputError(f"{name!r} is a built-in model; register yours under another name")
    REGISTRY[name] = Registered(task, factory, builtin)


class _Tasks(Mapping[str, str]):
    """Model name → task, a read-only view of the registry."""

    def __getitem__(self, name: str) -> str:
        return REGISTRY[name].task

    def __iter__(self) -> Iterator[str]:
        return iter(REGISTRY)

    def __len__(self) -> int:
        return len(REGISTRY)


MODELS: Mapping[str, str] = _Tasks()


def models_for(task: str) -> list[str]:
    return [name for name, entry in REGISTRY.items() if entry.task == task]


def model_task(name: str) -> str | None:
    """The task of a registered model (None for ``auto`` or an unknown name)."""
    entry = REGISTRY.get(name)
    return entry.task if entry else None


def check_name(name: str) -> None:
    """An unknown model name, refused before anything is read."""
    if name != "auto" and name not in REGISTRY:
        raise InputError(f"unknown model {name!r}; known models: {', '.join(REGISTRY)}")


def check_config(config: ModelConfig) -> ModelConfig:
    """Validate names and the model/task pairing; resolve ``auto`` to the task's default."""
    check_choice("task", config.task, TASKS)
    if config.name == "auto":
        config = replace(config, name=DEFAULT_MODEL[config.task])
    check_name(config.name)
    if REGISTRY[config.name].task != config.task:
        raise InputError(
            f"{config.name} is a {REGISTRY[config.name].task} model but the task is "
            f"{config.task}; choose one of {', '.join(models_for(config.task))}"
        )
    if config.in_channels < 1 or config.num_classes < 1 or config.settings.width < 1:
        raise InputError("in_channels, num_classes and width must be at least 1")
    check_settings(config.settings)
    return config


def check_settings(settings: ModelSettings) -> None:
    check_choice("activation", settings.activation, ACTIVATIONS)
    check_choice("normalisation", settings.norm, NORMS)
    check_choice("init", settings.init, INITS)
    if settings.width < 1 or (settings.depth is not None and settings.depth < 1):
        raise InputError(
            f"--width and --depth must be at least 1, not {settings.width} and {settings.depth}"
        )


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
        config = ModelConfig.of(name, in_channels, num_classes, task, **options)
    config = check_config(config)
    pairs = config.index_bands
    if config.settings.indices and not pairs:  # no band names given: B1 … Bn, in order
        pairs = index_pairs(
            config.settings.indices, [f"B{i}" for i in range(1, config.in_channels + 1)]
        )
    if pairs:  # the network sees the bands, then one normalised difference per pair
        net = REGISTRY[config.name].factory(
            replace(config, in_channels=config.in_channels + len(pairs))
        )
        model: nn.Module = WithIndices(net, pairs, config.in_channels)
    else:
        model = REGISTRY[config.name].factory(config)
    init_weights(model, config.settings.init)
    return model


def _simple(c: ModelConfig) -> nn.Module:
    s = c.settings
    return SimpleCNN(c.in_channels, c.num_classes, s.width, s.depth or 3, s.activation, s.norm)


def _unet(c: ModelConfig) -> nn.Module:
    s = c.settings
    return UNet(c.in_channels, c.num_classes, s.width, s.depth or 4, s.activation, s.norm)


def _resnet(c: ModelConfig) -> nn.Module:
    s = c.settings
    return build_resnet(c.name, c.in_channels, c.num_classes, c.small_stem, s.norm, s.activation)


def _resnet_unet(c: ModelConfig) -> nn.Module:
    s = c.settings
    encoder = c.name.removesuffix("-unet")
    return ResNetUNet(encoder, c.in_channels, c.num_classes, c.small_stem, s.norm, s.activation)


register_model("simple", "classification", _simple, builtin=True)
for _name in DEPTHS:
    register_model(_name, "classification", _resnet, builtin=True)
register_model("unet", "segmentation", _unet, builtin=True)
for _name in DEPTHS:
    register_model(f"{_name}-unet", "segmentation", _resnet_unet, builtin=True)


__all__ = [
    "DEPTHS",
    "MODELS",
    "REGISTRY",
    "SETTINGS",
    "ModelConfig",
    "ModelSettings",
    "build_model",
    "check_config",
    "check_name",
    "model_task",
    "models_for",
    "register_model",
]
