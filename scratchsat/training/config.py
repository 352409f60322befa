"""Training settings (:class:`TrainConfig`, declared in ``settings``) checked in full before
anything is read or written, and how ``--resume`` reconciles settings asked for now with the
run's own."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import fields, replace
from pathlib import Path

from ..device import check_device_name
from ..errors import InputError
from ..models import check_name
from ..models import check_settings as check_model_settings
from ..models.layers import check_choice
from ..settings import TrainConfig
from .augment import PRESETS
from .data import SAMPLINGS
from .losses import LOSSES
from .optim import CLASS_WEIGHTS, OPTIMIZERS, SCHEDULES

NAMES = TrainConfig.names()
RUNTIME_SETTINGS = tuple(f.name for f in fields(TrainConfig) if f.metadata.get("runtime"))


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
    counts = {"epochs": config.epochs, "epoch-steps": config.epoch_steps}
    for name, value in {**counts, "batch-size": config.batch_size}.items():
        if value is not None and value < 1:  # epochs None: sized by the data
            raise InputError(f"--{name} must be at least 1, not {value}")
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
