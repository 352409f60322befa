"""Every training setting in one record (:class:`TrainConfig`, with the model's settings
nested), checked in full before anything is read or written, and how ``--resume`` reconciles
settings asked for now with the run's own."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from ..device import check_device_name
from ..errors import InputError
from ..models import SETTINGS, ModelSettings, check_name
from ..models import check_settings as check_model_settings
from ..models.layers import check_choice
from ..settings import flat_settings
from .augment import PRESETS
from .data import SAMPLINGS
from .losses import LOSSES
from .optim import CLASS_WEIGHTS, OPTIMIZERS, SCHEDULES


@flat_settings("model_settings")
@dataclass(frozen=True)
class TrainConfig:
    """Every training setting; saved in the checkpoint and in ``model.json``."""

    model: str = "auto"  # auto: unet for segmentation, resnet18 for classification
    epochs: int = 30
    epoch_steps: int = 16  # an epoch is at least this many optimizer steps (data.epoch_length)
    batch_size: int = 32
    lr: float = 2e-3  # peak learning rate
    weight_decay: float = 1e-2
    optimizer: str = "adamw"
    schedule: str = "onecycle"
    aug: str = "d4crop"
    class_weights: str = "sqrt-median"  # rarer-than-median classes weigh √(median / n)
    label_smoothing: float = 0.0
    cutmix: float = 0.5  # fraction of training patches given a square of another (batch.py)
    loss: str = "ce"  # ce, ce+dice or ce+lovasz (losses.py)
    sampling: str = "uniform"  # uniform, or balanced: rare-class patches drawn more often
    amp: bool | None = None  # None: on for CUDA and for CPUs with native bf16 (device.py)
    channels_last: bool | None = None  # None: on for CUDA
    compile: bool = False
    device: str = "auto"
    workers: int | None = None  # None: 0 on the CPU, up to 8 with a GPU
    seed: int = 0
    batch_augment: bool | None = None  # normalise + d4 per batch on the device (None: on GPUs)
    patience: int | None = None  # stop after this many epochs without a better val score
    time_budget: float | None = None  # seconds: choose epochs to end within it (budget.py)
    ema: bool = True  # validate and save an exponential moving average of the weights
    calibrate: bool = True  # fit one logit offset per class on val after training (offsets.py)
    init_from: str | None = None  # a run whose weights to start from (init.py); None: random
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
        unknown = sorted(set(options) - set(NAMES) - {"model_settings"})
        if unknown:
            raise InputError(f"unknown training setting {unknown[0]!r}; known: {', '.join(NAMES)}")
        return cls.from_dict(options)


NAMES = tuple(f.name for f in fields(TrainConfig) if f.name != "model_settings") + SETTINGS
RUNTIME_SETTINGS = ("device", "workers", "compile")  # change speed, not the run: --resume applies


def check_settings(config: TrainConfig) -> None:
    """Every setting that cannot work, names included, before anything is read or written."""
    check_choice("optimizer", config.optimizer, OPTIMIZERS)
    check_choice("schedule", config.schedule, SCHEDULES)
    check_choice("class weighting", config.class_weights, CLASS_WEIGHTS)
    check_choice("augmentation", config.aug, PRESETS)
    check_choice("loss", config.loss, LOSSES)
    check_choice("sampling", config.sampling, SAMPLINGS)
    check_name(config.model)
    check_model_settings(config.model_settings)
    check_device_name(config.device)
    if config.time_budget is not None and not config.time_budget > 0:
        raise InputError(f"--time-budget must be more than 0 s, not {config.time_budget:g}")
    if config.epochs < 1 or config.batch_size < 1 or config.epoch_steps < 1:
        raise InputError(
            f"--epochs, --epoch-steps and --batch-size must be at least 1, not "
            f"{config.epochs}, {config.epoch_steps} and {config.batch_size}"
        )
    if not config.lr > 0 or config.weight_decay < 0:
        raise InputError(
            f"--lr must be positive and --weight-decay not negative, not "
            f"{config.lr:g} and {config.weight_decay:g}"
        )
    if not 0 <= config.cutmix <= 1:
        raise InputError(f"--cutmix must be in [0, 1], not {config.cutmix:g}")
    if not 0 <= config.label_smoothing < 1:
        raise InputError(f"--label-smoothing must be in [0, 1), not {config.label_smoothing:g}")
    if config.patience is not None and config.patience < 1:
        raise InputError(f"--patience must be at least 1 epoch, not {config.patience}")
    if config.workers is not None and config.workers < 0:
        raise InputError(
            f"--workers must be 0 (load batches in the main process) or more, not {config.workers}"
        )


def resumed_config(
    checkpoint: dict, asked: TrainConfig | None, explicit: Collection[str] | None, path: Path
) -> TrainConfig:
    """The run's own settings; settings asked for now must agree with them, except those that
    only change speed (``RUNTIME_SETTINGS``), which are applied."""
    # A run saved before epoch_steps existed drew its training split once an epoch; one saved
    # before cutmix existed trained without it.
    saved = TrainConfig.from_dict({"epoch_steps": 1, "cutmix": 0.0, **checkpoint["config"]})
    if asked is None:
        return saved
    defaults = TrainConfig()
    names = (
        explicit
        if explicit is not None
        else [f.name for f in fields(asked) if getattr(asked, f.name) != getattr(defaults, f.name)]
    )
    names = [n for n in names if n in NAMES]
    changed = [n for n in names if n not in RUNTIME_SETTINGS and asked.get(n) != saved.get(n)]
    if changed:
        listed = ", ".join(
            f"--{n.replace('_', '-')} {asked.get(n)} (the run has {saved.get(n)})" for n in changed
        )
        raise InputError(
            f"--resume continues the run in {path.parent} with its own settings, but {listed} "
            "would change it; leave those options out to continue, or start a new run with "
            "another --out"
        )
    runtime = {n: getattr(asked, n) for n in RUNTIME_SETTINGS if n in names}
    return replace(saved, **runtime)
