"""A batch on the device and one training step, as the epochs, validation, the time budget's
timing, calibration and ``bench`` all use them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..device import autocast_dtype
from .augment import BATCH_PRESETS
from .batch import cutmix_batch, d4_batch, host_batch, normalise_batch, step_generator
from .optim import optimizer_step

if TYPE_CHECKING:  # types only: setup builds the run from what these modules provide
    from .setup import Run


def to_device(run: Run, batch: list, augment: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A collated batch → (normalised float32 images, targets) on the device. Raw batches are
    normalised here, and get their D4 symmetries when ``augment`` and the preset has them (d4,
    d4crop; d4crop's crop was made as the batch was read)."""
    d4, tiles = augment and BATCH_PRESETS.get(run.config.aug, (False, False))[0], run.tiles
    if not run.raw:
        x, y = (t.to(run.device, non_blocking=True) for t in batch[:2])
    elif run.device.type == "cpu":  # one pass per sample on host threads
        ks = batch[2] if d4 else None
        x, y = host_batch(batch[0], batch[1], ks, tiles.dtype, tiles.mean, tiles.std, tiles.nodata)
    else:  # whole-batch tensor operations on the device
        x, y = (t.to(run.device, non_blocking=True) for t in batch[:2])
        mean, std = run.band_stats
        x = normalise_batch(x, tiles.dtype, mean, std, tiles.nodata)
        if d4:
            x, y = d4_batch(x, y, batch[2])
    if run.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def training_batch(run: Run, batch, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch on the device, augmented: the preset, then CutMix (segmentation only:
    a mask to cut with), its draws from the run's seed, the epoch and the step."""
    x, y = to_device(run, batch, augment=True)
    if run.config.cutmix and y.dim() == 3:
        draws = step_generator(run.config.seed, epoch, step)
        x, y = cutmix_batch(x, y, draws, run.config.cutmix)
    return x, y


def run_step(run: Run, model, optimizer, x, y, scaler=None) -> torch.Tensor:
    """:func:`optimizer_step` with the run's loss, device, precision and (by default) scaler."""
    scaler = run.scaler if scaler is None else scaler
    return optimizer_step(model, run.loss_fn, x, y, optimizer, scaler, run.device, run.amp_dtype)


def scoring_dtype(run: Run) -> torch.dtype | None:
    """The autocast dtype ``predict`` uses by default on the run's device."""
    return autocast_dtype(run.device, None)


def precision(of: Run | torch.dtype | None) -> str:
    """What forward passes compute in (a run's training, or an autocast dtype):
    ``bfloat16``/``float16`` under autocast, else ``float32``."""
    dtype = of if of is None or isinstance(of, torch.dtype) else of.amp_dtype
    return str(dtype or torch.float32).removeprefix("torch.")
