"""Every setting a user chooses, declared once: the model's (:class:`ModelSettings`), the
training run's (:class:`TrainConfig`) and prediction's (:class:`PredictOptions`); tiling's
(``tiles.options.TileOptions``) use the same :func:`setting`. Kept free of torch, so that the
command line can generate its options from them without importing a network.

A field declared with :func:`setting` carries its default, its help text and, where the
command line differs from Python, its option names, its command-line type and the parser from
one to the other. From that one declaration come the command's option (``cli.options``), its
``--config`` key and ``--print-config`` line (``cli.config``), and, for training, the key of
``model.json``, the checkpoint's record and what ``--resume`` compares (``asdict`` of the
record). Adding a setting is one field here (and the code that uses it)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

from .errors import InputError

T = TypeVar("T")
DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps."


def setting(
    default,
    help: str,  # noqa: A002 - the CLI's word
    *,
    flags: tuple[str, ...] = (),
    option_type: Any = None,
    parse: Callable[[Any], Any] | None = None,
    option: bool = True,
    runtime: bool = False,
):
    """A setting: its default and help text; ``flags``, the option's names where they are
    not ``--field-name`` (``("--amp/--no-amp",)``); ``option_type``, its command-line type
    where the field's differs (``str`` for a duration); ``parse``, the conversion from the
    command line's value to the field's; ``option=False`` for a setting of the Python API
    only; ``runtime=True`` for one that changes how fast a run goes, not the run (``train
    --resume`` applies it instead of refusing it)."""
    metadata = {"help": help, "flags": flags, "type": option_type, "parse": parse}
    return field(default=default, metadata={**metadata, "option": option, "runtime": runtime})


def options_of(record: type) -> list:
    """The fields of ``record`` (a dataclass) that are command-line options, in order."""
    return [f for f in fields(record) if f.metadata.get("option")]


def from_options(record: type[T], values: dict) -> dict:
    """Command-line ``values`` of ``record``'s options as the record's fields: parsed where
    the field says how; None (not given) kept as the field's default."""
    parsed = {}
    for f in options_of(record):
        if f.name not in values:
            continue
        value = values[f.name]
        if value is None:
            value = f.default
        elif f.metadata["parse"] is not None:
            value = f.metadata["parse"](value)
        parsed[f.name] = value
    return parsed


def comma_list(text: str) -> tuple[str, ...] | None:
    """``B04, B08,`` → ``("B04", "B08")``; nothing given → None."""
    return tuple(s.strip() for s in text.split(",") if s.strip()) or None


UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``3m``, ``1.5h`` or ``1h30m``."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise InputError(
                f"--time-budget {text!r} is not a duration; write it like 90s, 3m, 1.5h or 1h30m"
            )
        seconds = sum(float(n) * UNITS[u] for n, u in parts)
    if not seconds > 0:
        raise InputError(f"--time-budget must be more than 0, not {text!r}")
    return seconds


def absolute_path(text: str) -> str:
    """A path as given, made absolute (a run folder named from the current folder)."""
    from pathlib import Path

    return str(Path(text).resolve())


@dataclass(frozen=True)
class ModelSettings:
    """The architecture settings a user chooses. Each field is a ``scratchsat train`` option
    of the same name, a setting of :class:`TrainConfig` (flat: ``TrainConfig(width=16)``) and
    of ``models.ModelConfig``, and a key of ``model.json``; the model factories read it from
    the config they are given."""

    width: int = setting(32, "simple/unet: channels of the first block.")
    depth: int | None = setting(None, "simple: blocks (3); unet: poolings (4).")
    activation: str = setting("relu", "simple/unet/resnet: relu, gelu, elu or silu.")
    norm: str = setting("batch", "batch, group or none.")
    init: str = setting("kaiming", "kaiming, xavier or orthogonal.")
    indices: str | None = setting(
        None,
        "Normalised differences (a - b) / (a + b) of named bands, fed as extra inputs: "
        "A-B[,C-D…], e.g. B08-B04,B03-B08 (NDVI, NDWI of Sentinel-2).",
    )


SETTINGS = tuple(f.name for f in fields(ModelSettings))


def flat_settings(name: str):
    """Class decorator for a dataclass that nests :class:`ModelSettings` in field ``name``: it
    also takes the settings flat (``TrainConfig(width=16)``, as the Python API always has) and
    reads them as attributes (``config.width``)."""

    def decorate(cls: type[T]) -> type[T]:
        generated = cls.__init__

        def __init__(self, *args, **kwargs) -> None:
            flat = {s: kwargs.pop(s) for s in SETTINGS if s in kwargs}
            if flat:
                kwargs[name] = replace(kwargs.get(name, ModelSettings()), **flat)
            generated(self, *args, **kwargs)

        def __getattr__(self, attribute: str):
            if attribute in SETTINGS:
                return getattr(getattr(self, name), attribute)
            raise AttributeError(f"{cls.__name__} has no attribute {attribute!r}")

        cls.__init__ = __init__  # type: ignore[misc,method-assign]
        cls.__getattr__ = __getattr__  # type: ignore[attr-defined]
        return cls

    return decorate


@flat_settings("model_settings")
@dataclass(frozen=True)
class TrainConfig:
    """Every training setting; saved in the checkpoint and in ``model.json``. Checked in full
    by ``training.config.check_settings`` before anything is read or written."""

    model: str = setting(
        "auto",
        "auto (unet for segmentation, resnet18 for classification), simple, resnet18, "
        "resnet34, resnet50, unet, resnet18-unet, resnet34-unet or resnet50-unet.",
    )
    epochs: int | None = setting(  # see training.setup.default_epochs
        None,
        "Passes over the training split (default: 30, or on a small split as many as make "
        "960 optimizer steps).",
    )
    epoch_steps: int = setting(  # see data.epoch_length
        16,
        "An epoch is at least this many optimizer steps: a training split of fewer batches is "
        "drawn more than once an epoch, each time in a new order.",
    )
    batch_size: int = setting(32, "Patches per step.")
    lr: float = setting(2e-3, "Peak learning rate.")
    weight_decay: float = setting(1e-2, "Weight decay (not on biases and norms).")
    optimizer: str = setting("adamw", "adamw or sgd (Nesterov momentum 0.9).")
    schedule: str = setting(
        "onecycle", "onecycle, cosine (with warm-up) or none, stepped per batch."
    )
    aug: str = setting(
        "d4crop",
        "none; d4 (flips and 90° rotations, exact); d4crop (d4, and half the time a crop of "
        "50-100% of the patch side mirrored back out; segmentation); geo (d4, small rotations, "
        "per-band jitter and noise).",
    )
    class_weights: str = setting(
        "sqrt-median",
        "Loss weights per class: none, inverse or sqrt-inverse frequency, or sqrt-median: "
        "√(median count / count) for classes rarer than the median, 1 else.",
    )
    label_smoothing: float = setting(0.0, "Label smoothing in [0, 1).")
    cutmix: float = setting(  # batch.py
        0.5,
        "Fraction of training patches (segmentation) given a square of another patch of the "
        "batch, its labels with it (CutMix); 0: off.",
    )
    loss: str = setting(  # losses.py
        "ce",
        "ce (cross-entropy), ce+dice (plus a soft Dice term that weighs every class alike, for "
        "mean IoU and rare classes) or ce+lovasz (plus the Lovász-softmax surrogate of "
        "1 − mean IoU).",
    )
    sampling: str = setting(
        "uniform",
        "uniform, or balanced: patches with classes found in few patches are drawn more often "
        "(repeat factor √(most widespread class's share / the class's share)).",
    )
    amp: bool | None = setting(  # device.py
        None,
        "bf16 autocast (default: on for CUDA and on CPUs with native bf16).",
        flags=("--amp/--no-amp",),
    )
    channels_last: bool | None = setting(
        None,
        "NHWC memory layout (default: on for CUDA).",
        flags=("--channels-last/--no-channels-last",),
    )
    compile: bool = setting(False, "torch.compile the model.", flags=("--compile",), runtime=True)
    device: str = setting("auto", DEVICE_HELP, runtime=True)
    workers: int | None = setting(
        None,
        "DataLoader worker processes (default: 0 on the CPU, up to 8 on a GPU).",
        runtime=True,
    )
    seed: int = setting(0, "Seed of weights, batch order and augmentation.")
    batch_augment: bool | None = setting(
        None,
        "Normalise and apply d4 per batch on the device, not per patch in workers (default: on "
        "for GPUs; aug none, d4 or d4crop only).",
        flags=("--batch-augment/--no-batch-augment",),
    )
    patience: int | None = setting(
        None, "Stop after this many epochs without a better validation score."
    )
    time_budget: float | None = setting(  # seconds (budget.py)
        None,
        "Train for as many epochs as fit in this time on this machine (90s, 3m, 1h30m), "
        "measured before training starts; instead of --epochs.",
        option_type=str | None,
        parse=parse_duration,
    )
    ema: bool = setting(
        True,
        "Validate and save a moving average of the weights (horizon: a tenth of the training "
        "steps).",
        flags=("--ema/--no-ema",),
    )
    calibrate: bool = setting(  # offsets.py
        True,
        "After training, fit one logit offset per class on the validation split (to its mean "
        "IoU; macro F1 for classification) and add them to the model's output bias.",
        flags=("--calibrate/--no-calibrate",),
    )
    init_from: str | None = setting(  # init.py
        None,
        "Start from this run's weights (same model and bands; other classes get a new last "
        "layer) instead of random ones.",
        parse=absolute_path,
    )
    model_settings: ModelSettings = ModelSettings()  # width, depth, activation, norm, init

    def get(self, name: str):
        """A setting by name, model settings included (``get("width")``)."""
        if name in SETTINGS:
            return getattr(self.model_settings, name)
        return getattr(self, name)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """From ``asdict`` output, as checkpoints and ``model.json`` hold it; model settings
        nested or, as older runs wrote them, flat. Keys it does not know are ignored."""
        from dataclasses import asdict

        known = {f.name for f in fields(cls)} - {"model_settings"}
        nested = data.get("model_settings") or {}
        if isinstance(nested, ModelSettings):
            nested = asdict(nested)
        flat = {k: v for k, v in {**nested, **data}.items() if k in SETTINGS}
        kept = {k: v for k, v in data.items() if k in known}
        return cls(**kept, model_settings=ModelSettings(**flat))

    @classmethod
    def of(cls, **options) -> TrainConfig:
        """From flat options, as the CLI has them (``width=8`` beside ``epochs=3``); a name
        that is not a setting is refused."""
        names = cls.names()
        unknown = sorted(set(options) - set(names) - {"model_settings"})
        if unknown:
            raise InputError(f"unknown training setting {unknown[0]!r}; known: {', '.join(names)}")
        return cls.from_dict(options)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Every setting's name, the model's included, flat."""
        return tuple(f.name for f in fields(cls) if f.name != "model_settings") + SETTINGS


@dataclass(frozen=True)
class PredictOptions:
    """How to predict; every field has a default that works."""

    patch_size: int | None = setting(
        None, "Window side in pixels (default: the training patch size)."
    )
    overlap: float = setting(  # README: measured
        0.5, "Fraction of a window shared with its neighbour."
    )
    batch_size: int = setting(32, "Windows per forward pass.")
    device: str = setting("auto", DEVICE_HELP)
    amp: bool | None = setting(
        None, "bf16 autocast (default: on for CUDA).", flags=("--amp/--no-amp",)
    )
    cog: bool = setting(False, "Write Cloud-Optimized GeoTIFFs with overviews.", flags=("--cog",))
    float_probabilities: bool = setting(
        False,
        "Probabilities as float32 0–1 (default: uint8 whole percent, GDAL scale 0.01).",
        flags=("--float",),
    )
    min_valid: float = setting(  # classification only
        0.5, "Cells whose window has a smaller valid fraction are nodata.", option=False
    )
    tta: bool = setting(
        False,
        "Average each window over its 8 flips and quarter turns (8× slower).",
        flags=("--tta",),
    )
    ensemble: tuple[str, ...] = setting(
        (),
        "Another run whose probabilities are averaged in (same bands and classes); repeat for "
        "more.",
        option_type=list[str] | None,
        parse=tuple,
    )
