"""A training run: its settings (:class:`TrainConfig`), everything it works with (:class:`Run`),
how it is set up from a tiles folder, and what its folder and checkpoints hold."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import os
import signal
import threading
import warnings
from collections.abc import Collection, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import BatchSampler, DataLoader

from ..bundle import BundleMeta, load_checkpoint, state_dict
from ..device import SINGLE, Ranks, autocast_dtype, pick_device
from ..errors import DatasetError, InitWarning, InputError, OutputExistsError, Terminated
from ..geo.labels import IGNORE_INDEX
from ..geo.outputs import remove_stale_temporaries
from ..models import MODELS, ModelConfig, build_model, check_config, models_for
from ..models.inputs import index_pairs, set_band_stats, unwrap
from ..runfolder import RunFolder
from ..tiles.format import Tiles, folder_files, union_tiles
from . import distributed
from .augment import BATCH_PRESETS
from .config import TrainConfig, check_settings, resumed_config
from .data import EpochSampler, PatchDataset, epoch_length, patch_weights
from .distributed import ShardSampler
from .init import init_from
from .losses import build_loss
from .optim import build_optimizer, build_schedule, class_weights

if TYPE_CHECKING:  # types only: a run's time-budget plan (budget.py uses the run)
    from .budget import Plan


EPOCHS = 30  # the default number of epochs, on a training split of many batches
MIN_STEPS = 960  # and at least this many optimizer steps on a small one (60 epochs of 16)


def default_epochs(steps_per_epoch: int) -> int:
    """How long to train when ``--epochs`` is not given, from the amount of data: 30 epochs,
    or as many as make ``MIN_STEPS`` optimizer steps where an epoch is short (a training split
    under 32 batches). On the quality matrix the small cells (a 480 px crop, 30 m bands, the
    tree scene; 16 steps an epoch) gained 0.014–0.035 mean IoU from 480 to 960 steps
    (docs/quality.md); a large split keeps 30 epochs, its time growing with the data."""
    return max(EPOCHS, -(-MIN_STEPS // max(steps_per_epoch, 1)))


MIN_PIXELS = 1_000  # validation pixels a class needs before anything is fitted to it there
MIN_PATCHES = 20  # classification: the same, in patches' worth of pixels


def thin_classes(tiles) -> dict[str, int]:
    """Classes of the training split that validation holds too little of to fit anything to
    (fewer than ``MIN_PIXELS`` labelled pixels; classification: ``MIN_PATCHES`` patches'
    worth): name → their validation pixels. With any, the run keeps its last epoch instead of
    the best on validation, and their decision offsets stay 0 (:func:`calibrate`)."""
    least = MIN_PIXELS if tiles.task == "segmentation" else MIN_PATCHES * tiles.patch_size**2
    thin = {}
    for c in tiles.classes:
        split = c.get("pixels_by_split") or {}
        if split.get("train", 0) > 0 and split.get("val", 0) < least:
            thin[c["name"]] = int(split.get("val", 0))
    return thin


def thin_line(thin: dict[str, int], task: str) -> str:
    """What a thin validation split changes, in one line for the training log."""
    least = f"{MIN_PIXELS:,} pixels" if task == "segmentation" else f"{MIN_PATCHES} patches"
    named = ", ".join(f"{name} ({count:,} px)" for name, count in thin.items())
    return (
        f"validation holds less than {least} of {named}: the last epoch is kept, not the "
        "best on validation, and no decision offset is fitted to "
        + ("them" if len(thin) > 1 else "it")
    )


@dataclass
class Run:
    """Everything one training run works with."""

    folder: Path
    config: TrainConfig
    tiles: Tiles
    model_config: ModelConfig
    device: torch.device
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    loaders: dict[str, DataLoader]
    amp_dtype: torch.dtype | None
    channels_last: bool
    data_hash: str
    ranks: Ranks = SINGLE
    folder_hashes: dict[str, str] = field(default_factory=dict)  # each tiles folder's hash
    history: list[dict] = field(default_factory=list)
    best: float = -math.inf
    best_epoch: int = 0
    saved_at: tuple[int, int] | None = None  # (epoch, step) of the checkpoint on disk
    stop: StopRequest = field(default_factory=lambda: StopRequest())
    ema: AveragedModel | None = None  # the weights validated and saved, with --ema
    plan: Plan | None = None  # with --time-budget (not on resume): checked after each epoch

    @property
    def files(self) -> RunFolder:
        """The names of the run folder's files."""
        return RunFolder(self.folder)

    @property
    def epochs(self) -> int:
        """The epochs the run trains (``--epochs``, or :func:`default_epochs`: set by setup)."""
        assert self.config.epochs is not None, "setup resolves the default epochs"
        return self.config.epochs

    @property
    def thin_classes(self) -> dict[str, int]:
        """Classes validation holds too little of (:func:`thin_classes`)."""
        return thin_classes(self.tiles)

    @property
    def keeps_last(self) -> bool:
        """A thin validation split: every epoch replaces the saved weights (the last is kept),
        none is picked as best on it."""
        return bool(self.thin_classes)

    @property
    def scored(self) -> nn.Module:
        """The network that is validated, saved and reported: the moving average of the
        weights with --ema, else the weights being trained."""
        return self.ema.module if self.ema is not None else unwrap(self.model)

    @property
    def sampler(self) -> EpochSampler:
        """The training loader's sampler (order and per-item seeds of each epoch)."""
        sampler = self.loaders["train"].sampler
        found = sampler.sampler if isinstance(sampler, BatchSampler) else sampler
        assert isinstance(found, EpochSampler)
        return found

    @property
    def raw(self) -> bool:
        """Patches arrive raw and are normalised (and D4-augmented) on the device."""
        return self.train_set.raw

    @property
    def train_set(self) -> PatchDataset:
        dataset = self.loaders["train"].dataset
        assert isinstance(dataset, PatchDataset)
        return dataset

    @functools.cached_property
    def band_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-band mean and std as (C,) tensors on the device."""
        return (
            torch.from_numpy(self.tiles.mean).to(self.device),
            torch.from_numpy(self.tiles.std).to(self.device),
        )

    @property
    def class_names(self) -> list[str]:
        return [c["name"] for c in self.tiles.classes]


class StopRequested(KeyboardInterrupt):
    """Raised by the training loop itself at a step boundary after Ctrl-C or SIGTERM."""


class StopRequest:
    """A signal handler for Ctrl-C and SIGTERM during training: the first one is remembered
    and acted on at the next step boundary (so the checkpoint is exact); a second one stops at
    once."""

    def __init__(self) -> None:
        self.signal_number: int | None = None

    def __call__(self, signal_number: int, frame) -> None:
        if self.signal_number is not None:
            raise Terminated() if signal_number == signal.SIGTERM else KeyboardInterrupt()
        self.signal_number = signal_number

    def check(self) -> None:
        """At a step boundary: stop here if a signal came."""
        if self.signal_number is not None:
            raise StopRequested()

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Handle SIGINT and SIGTERM with this request while the block runs (main thread)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)


def data_hash(folder: Path) -> str:
    """A BLAKE2b hash of the tiles folder's dataset.json and arrays, in a fixed order."""
    digest = hashlib.blake2b(digest_size=16)
    for path in folder_files(folder):
        with open(path, "rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
    return "blake2b:" + digest.hexdigest()


def folder_hashes(tiles: Tiles) -> dict[str, str]:
    """Each tiles folder's :func:`data_hash`, by path."""
    return {str(folder.resolve()): data_hash(folder) for folder in tiles.folders}


def combined_hash(hashes: dict[str, str]) -> str:
    """One folder: its hash; several: a hash of their hashes in the order given."""
    if len(hashes) == 1:
        return next(iter(hashes.values()))
    digest = hashlib.blake2b("\n".join(hashes.values()).encode(), digest_size=16)
    return "blake2b:" + digest.hexdigest()


def check_tiles(tiles: Tiles) -> None:
    if tiles.splits.get("val", 0) == 0:
        splits = ", ".join(f"{k} {v}" for k, v in tiles.splits.items())
        raise DatasetError(
            f"{tiles.name} has no validation patches ({splits}); tile again with a larger "
            "--val, a smaller --block-size or a larger scene"
        )


def prepare_folder(folder: Path, resume: bool, overwrite: bool, ranks: Ranks = SINGLE) -> None:
    """Create the run folder; refuse to mix with an earlier run unless asked. Every process
    checks (so all refuse alike); only rank 0 changes anything, and removes the temporaries
    a killed earlier run left."""
    existing = RunFolder(folder).existing()
    if ranks.main:
        for name in RunFolder.FILES:
            remove_stale_temporaries(folder / name)
    if existing and not (resume or overwrite):
        raise OutputExistsError(
            f"{folder} already holds a training run ({', '.join(existing)}); pass --overwrite "
            "to replace it, --resume to continue it, or choose another --out"
        )
    if ranks.main:
        if overwrite and not resume:
            for name in existing:
                (folder / name).unlink()
        folder.mkdir(parents=True, exist_ok=True)
    distributed.barrier()


def build_loaders(
    config: TrainConfig, tiles: Tiles, augment, device: torch.device, ranks: Ranks = SINGLE
) -> dict[str, DataLoader]:
    """Training batches in the order an :class:`EpochSampler` draws; val and test in order."""
    raw = on_device_augment(config, augment, device)
    workers = config.workers
    if workers is None:
        # Raw batches are one fancy-indexed read of the memory-mapped store each: faster in
        # this process than sent over from workers (measured: README, Performance), and the
        # GPU runs ahead of the host meanwhile, as nothing in the loop waits for it.
        workers = min(8, os.cpu_count() or 1) if device.type == "cuda" and not raw else 0
    common = {
        "num_workers": workers,
        "pin_memory": device.type == "cuda",
        "persistent_workers": workers > 0,
    }
    spec = None if raw else (augment if augment is not None else config.aug)
    crop = raw and BATCH_PRESETS[config.aug][1]
    train_set = PatchDataset(tiles, "train", spec, raw=raw, crop=crop)
    weights = patch_weights(train_set) if config.sampling == "balanced" else None
    length = epoch_length(len(train_set), config.batch_size, config.epoch_steps, ranks.world_size)
    sampler = EpochSampler(
        len(train_set), config.seed, ranks.rank, ranks.world_size, weights, length
    )
    loaders = {
        "train": batch_loader(
            train_set, sampler, len(sampler) > config.batch_size, config.batch_size, common
        )
    }
    for split in ("val", "test"):
        if tiles.splits.get(split, 0):
            dataset = PatchDataset(tiles, split, raw=raw)
            shard = ShardSampler(len(dataset), ranks)
            loaders[split] = batch_loader(dataset, shard, False, config.batch_size, common)
    return loaders


def batch_loader(
    dataset: PatchDataset, sampler, drop_last: bool, batch_size: int, common: dict
) -> DataLoader:
    """A DataLoader over ``sampler``'s order. Raw patches are fetched a batch at a time (one
    read of the store per batch, no stacking copy); the others item by item, so augmentation
    runs per patch in the workers."""
    if not dataset.raw:
        return DataLoader(
            dataset, sampler=sampler, drop_last=drop_last, batch_size=batch_size, **common
        )
    batches = BatchSampler(sampler, batch_size, drop_last)
    return DataLoader(dataset, sampler=batches, batch_size=None, **common)


def on_device_augment(config: TrainConfig, augment, device: torch.device) -> bool:
    """Whether patches travel raw and are normalised (and D4-augmented) per batch on the
    device: by default on GPUs, where that is nearly free, and only for the presets that move
    pixels without resampling them (``none``, ``d4``, ``d4crop``, whose crop is made as the raw
    batch is read; ``geo`` and custom pipelines interpolate, so they run in the DataLoader
    workers)."""
    wanted = config.batch_augment
    if wanted is None:
        wanted = device.type != "cpu"
    return wanted and augment is None and config.aug in BATCH_PRESETS


def first_model(config, model_config, tiles: Tiles, device, channels_last: bool, new: bool):
    """The network before training: random weights from the seed (or ``--init-from``'s, for
    a ``new`` run: a resumed one has its own), the bands' statistics, on ``device``."""
    torch.manual_seed(config.seed)
    model = build_model(model_config)
    if config.init_from and new:
        fresh = init_from(model, model_config, config.init_from, tiles)
        if fresh:
            warnings.warn(
                f"--init-from {config.init_from}: its classes differ from these tiles', so "
                f"{', '.join(fresh)} start(s) from random weights; the rest from the run's",
                InitWarning,
                stacklevel=3,
            )
    set_band_stats(model, tiles.mean, tiles.std)  # --indices: on the bands' own values
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def training_loss(config, tiles: Tiles, loaders: dict, device):
    """The loss, its class weights counted on the training split."""
    train_set = loaders["train"].dataset
    assert isinstance(train_set, PatchDataset)
    weights = class_weights(train_counts(tiles, train_set), config.class_weights)
    return build_loss(
        config.loss,
        torch.from_numpy(weights).to(device) if weights is not None else None,
        IGNORE_INDEX,
        config.label_smoothing,
    )


def setup(
    tiles_folder,
    folder: Path,
    config: TrainConfig | None,
    resume: bool,
    overwrite: bool,
    augment,
    explicit: Collection[str] | None = None,
    dry_run: bool = False,
) -> tuple[Run, dict | None]:
    """Check everything that can be wrong before writing anything, then build the run (with
    ``dry_run``, without its folder)."""
    checkpoint = None
    if resume:
        path = RunFolder(folder).checkpoint
        if not path.exists():
            raise InputError(f"nothing to resume: {path} does not exist; train without --resume")
        checkpoint = load_checkpoint(path)
        config = resumed_config(checkpoint, config, explicit, path)
    config = config or TrainConfig()
    check_settings(config)
    given = [tiles_folder] if isinstance(tiles_folder, (str, os.PathLike)) else tiles_folder
    tiles = union_tiles(given)
    check_tiles(tiles)
    model_config = model_config_for(config, tiles)
    ranks, device = distributed.init(pick_device(config.device))
    hashes = folder_hashes(tiles)
    digest = combined_hash(hashes)
    if checkpoint is not None and checkpoint["data_hash"] != digest:
        raise InputError(
            f"{tiles.name} changed since the run in {folder} started; "
            "resume with the same tiles, or start a new run"
        )
    channels_last = device.type == "cuda" if config.channels_last is None else config.channels_last
    model = first_model(config, model_config, tiles, device, channels_last, checkpoint is None)
    amp_dtype = autocast_dtype(device, config.amp, training=True)
    loaders = build_loaders(config, tiles, augment, device, ranks)
    if config.epochs is None:
        config = replace(config, epochs=default_epochs(len(loaders["train"])))
    optimizer = build_optimizer(model, config.optimizer, config.lr, config.weight_decay)
    epochs = config.epochs or default_epochs(len(loaders["train"]))  # resolved just above
    schedule = build_schedule(optimizer, config.schedule, epochs * len(loaders["train"]))
    loss_fn = training_loss(config, tiles, loaders, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    if not dry_run:
        prepare_folder(folder, resume, overwrite, ranks)
    model = distributed.wrap(model, ranks, device)
    if config.compile:
        model = torch.compile(model)  # type: ignore[assignment]  # an nn.Module in practice
    run = Run(
        folder=folder,
        config=config,
        tiles=tiles,
        model_config=model_config,
        device=device,
        model=model,
        optimizer=optimizer,
        schedule=schedule,
        scaler=scaler,
        loss_fn=loss_fn,
        loaders=loaders,
        amp_dtype=amp_dtype,
        channels_last=channels_last,
        data_hash=digest,
        ranks=ranks,
        folder_hashes=hashes,
    )
    if checkpoint is not None:
        restore(run, checkpoint)
    return run, checkpoint


def model_config_for(config: TrainConfig, tiles: Tiles) -> ModelConfig:
    """The architecture for these tiles: bands in, classes out, the tiles' task."""
    kind = MODELS.get(config.model)
    if kind is not None and kind != tiles.task:
        raise InputError(
            f"{config.model} is a {kind} model but {tiles.name} holds {tiles.task} tiles; "
            f"choose one of {', '.join(models_for(tiles.task))}, or tile again with "
            f"--task {kind}"
        )
    return check_config(
        ModelConfig(
            config.model,
            tiles.in_channels,
            tiles.num_classes,
            tiles.task,
            small_stem=tiles.patch_size <= 64,
            settings=config.model_settings,
            index_bands=index_pairs(config.model_settings.indices, tiles.bands),
        )
    )


def train_counts(tiles: Tiles, train_set: PatchDataset) -> np.ndarray:
    """Pixels (segmentation) or patches (classification) per class in the training split."""
    if tiles.task == "segmentation":
        return np.array([c["pixels_by_split"]["train"] for c in tiles.classes])
    return np.bincount(train_set.targets(), minlength=tiles.num_classes)


def restore(run: Run, checkpoint: dict) -> None:
    unwrap(run.model).load_state_dict(checkpoint["model"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    run.schedule.load_state_dict(checkpoint["schedule"])
    run.scaler.load_state_dict(checkpoint["scaler"])
    run.history = list(checkpoint["history"])
    run.best, run.best_epoch = checkpoint["best"], checkpoint["best_epoch"]
    run.saved_at = (checkpoint["epoch"], checkpoint["step"])


def checkpoint_state(run: Run, epoch: int, step: int, partial: tuple[float, int]) -> dict:
    """Resume point: ``epoch`` (1-based) with ``step`` of its batches done."""
    return {
        "model": state_dict(run.model),
        "optimizer": run.optimizer.state_dict(),
        "schedule": run.schedule.state_dict(),
        "scaler": run.scaler.state_dict(),
        "config": asdict(run.config),
        "data_hash": run.data_hash,
        "epoch": epoch,
        "step": step,
        "partial_loss": partial,
        "history": run.history,
        "best": run.best,
        "best_epoch": run.best_epoch,
        "ema": run.ema.state_dict() if run.ema is not None else None,
    }


def attach_ema(run: Run, checkpoint: dict | None) -> None:
    """With --ema, average the weights (buffers too) with a decay sized by the run: its
    horizon is a tenth of all training steps, so short and long runs average alike."""
    if not run.config.ema:
        return
    total = run.epochs * max(len(run.loaders["train"]), 1)
    decay = 1 - 1 / max(10, total // 10)
    run.ema = AveragedModel(
        unwrap(run.model), multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True
    )
    if checkpoint is not None and checkpoint.get("ema") is not None:
        run.ema.load_state_dict(checkpoint["ema"])


def bundle_meta(run: Run) -> BundleMeta:
    """model.json of this run (:meth:`BundleMeta.of_run`): its model, tiles and settings."""
    best = run.history[run.best_epoch - 1] if run.best_epoch else {}
    return BundleMeta.of_run(
        model=run.model_config.to_dict(),
        tiles={**run.tiles.info, "task": run.tiles.task, "patch_size": run.tiles.patch_size},
        classes=list(run.tiles.classes),
        training=asdict(run.config),
        data={
            "tiles": str(run.tiles.folder.resolve()),  # the first folder
            "hash": run.data_hash,
            "folders": [{"path": p, "hash": h} for p, h in run.folder_hashes.items()],
        },
        epoch=run.best_epoch,
        metrics={k: v for k, v in best.items() if k.startswith("val_")},
    )
