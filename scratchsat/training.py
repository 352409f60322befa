"""Train a network from random weights on a tiles folder (``scratchsat train``).

Reads top to bottom: :func:`train` sets up a :class:`Run` (data, model, optimizer, schedule),
then alternates :func:`train_one_epoch` and :func:`evaluate`, writing the run folder as it goes.
On a GPU it uses bf16 autocast (fp16 with a gradient scaler where bf16 is missing),
channels_last, pinned memory and non-blocking copies, and reads the loss back to the host
only when the progress bar is refreshed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file

from . import distributed
from .batch import d4_batch, host_batch, normalise_batch
from .bundle import save_bundle, save_checkpoint, save_weights
from .device import autocast
from .errors import DivergedError, TrainingInterrupted
from .labels import IGNORE_INDEX
from .metrics import scores, update_confusion
from .raster import write_json
from .report import LABELS, epoch_row, metric_name, plot_confusion, plot_curves, write_metrics_csv
from .run import Run, TrainConfig, bundle_meta, checkpoint_state, setup

REFRESH_STEPS = 10  # progress (and the host read of the loss it needs) every N steps
Progress = Callable[..., None]  # progress(done, total, **fields)


def to_device(run: Run, batch: list, augment: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A collated batch → (normalised float32 images, targets) on the device. Raw batches are
    normalised here, and get their D4 symmetries when ``augment`` and the preset is d4."""
    d4, tiles = augment and run.config.aug == "d4", run.tiles
    if not run.raw:
        x, y = (t.to(run.device, non_blocking=True) for t in batch[:2])
    elif run.device.type == "cpu":  # one pass per sample on host threads
        ks = batch[2] if d4 else None
        x, y = host_batch(*batch[:2], ks, tiles.dtype, tiles.mean, tiles.std, tiles.nodata)
    else:  # whole-batch tensor operations on the device
        x, y = (t.to(run.device, non_blocking=True) for t in batch[:2])
        mean, std = run.band_stats
        x = normalise_batch(x, tiles.dtype, mean, std, tiles.nodata)
        if d4:
            x, y = d4_batch(x, y, batch[2])
    if run.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def train_one_epoch(
    run: Run, epoch: int, start: int, partial: tuple[float, int], progress: Progress | None
) -> dict:
    """One pass over the training split from batch ``start``; returns loss and speed."""
    run.model.train()
    run.sampler.set_epoch(epoch, start * run.config.batch_size)
    total = len(run.loaders["train"]) + start
    loss_sum = torch.tensor(partial[0], dtype=torch.float32, device=run.device)
    seen, step, begin = partial[1], start, time.perf_counter()
    first_bad = torch.tensor(-1, device=run.device)  # first step with a non-finite loss
    try:
        for step, batch in enumerate(run.loaders["train"], start=start + 1):
            x, y = to_device(run, batch, augment=True)
            with autocast(run.device, run.amp_dtype):
                loss = run.loss_fn(run.model(x), y)
            run.optimizer.zero_grad(set_to_none=True)
            run.scaler.scale(loss).backward()
            run.scaler.step(run.optimizer)
            run.scaler.update()
            run.schedule.step()
            loss = loss.detach()
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step, first_bad)
            loss_sum += loss * len(x)
            seen += len(x)
            if step % REFRESH_STEPS == 0 or step == total:
                check_finite(run, epoch, int(first_bad))  # the one host sync
                if progress is not None:
                    rate = (seen - partial[1]) / (time.perf_counter() - begin)
                    progress(step, total, epoch=epoch, loss=float(loss_sum) / seen, rate=rate)
    except KeyboardInterrupt:
        if run.ranks.main:
            state = checkpoint_state(run, epoch, step, (float(loss_sum), seen))
            save_checkpoint(run.folder / "checkpoint.pt", state)
        raise TrainingInterrupted(run.folder, epoch, step) from None
    seconds = time.perf_counter() - begin
    counts = torch.tensor([seen - partial[1], seen], dtype=torch.float32, device=run.device)
    distributed.all_sum(loss_sum, counts)  # over all processes
    return {
        "loss": float(loss_sum) / max(float(counts[1]), 1),
        "seconds": seconds,
        "samples_per_s": float(counts[0]) / seconds,
    }


def check_finite(run: Run, epoch: int, first_bad: int) -> None:
    if first_bad >= 0:
        last = f"end of epoch {epoch - 1}" if epoch > 1 else "none yet"
        raise DivergedError(
            f"training diverged: the loss became NaN or infinite at epoch {epoch}, step "
            f"{first_bad}; the last good checkpoint ({last}) is kept in {run.folder}. Lower "
            f"--lr (now {run.config.lr:g}), or try --no-amp or --class-weights none"
        )


@torch.no_grad()
def evaluate(run: Run, split: str) -> dict:
    """Loss (unweighted, over labelled pixels) and confusion-matrix scores on a split."""
    run.model.eval()
    k = run.tiles.num_classes
    confusion = torch.zeros(k, k, dtype=torch.int64, device=run.device)
    loss_sum = torch.zeros((), dtype=torch.float32, device=run.device)
    count = torch.zeros((), dtype=torch.int64, device=run.device)
    for batch in run.loaders[split]:
        x, y = to_device(run, batch, augment=False)
        with autocast(run.device, run.amp_dtype):
            logits = run.model(x)
        loss_sum += F.cross_entropy(logits.float(), y, ignore_index=IGNORE_INDEX, reduction="sum")
        count += (y != IGNORE_INDEX).sum()
        update_confusion(confusion, logits.argmax(1), y, IGNORE_INDEX)
    distributed.all_sum(confusion, loss_sum, count)  # each process scored its shard
    result = scores(confusion.cpu().numpy(), run.class_names)
    return {"loss": float(loss_sum) / max(int(count), 1), **result}


def finish_epoch(run: Run, epoch: int, train: dict, val: dict) -> bool:
    """Record the epoch; rank 0 saves weights, checkpoint and metrics. True when this epoch is
    the best so far."""
    lr = run.optimizer.param_groups[0]["lr"]
    run.history.append(epoch_row(epoch, lr, train, val, run.tiles.task))
    score = val[metric_name(run.tiles.task)] or 0.0
    improved = score > run.best
    if improved:
        run.best, run.best_epoch = score, epoch
    if run.ranks.main:
        if improved:
            save_bundle(run.folder, run.model, bundle_meta(run))
        save_weights(run.model, run.folder / "last.safetensors")
        state = checkpoint_state(run, epoch + 1, 0, (0.0, 0))
        save_checkpoint(run.folder / "checkpoint.pt", state)
        write_metrics_csv(run.folder / "metrics.csv", run.history)
    return improved


def write_report(run: Run, epochs_run: int, stopped_early: bool) -> dict:
    """Reload the best weights; score validation and test; write report.json and the plots."""
    distributed.barrier()  # rank 0 has written the best weights
    weights = load_file(str(run.folder / "model.safetensors"), device=str(run.device))
    distributed.unwrap(run.model).load_state_dict(weights)
    report = {
        "task": run.tiles.task,
        "metric": metric_name(run.tiles.task),
        "best_epoch": run.best_epoch,
        "epochs_run": epochs_run,
        "stopped_early": stopped_early,
        "device": str(run.device),
        "val": evaluate(run, "val"),
        "test": evaluate(run, "test") if "test" in run.loaders else None,
    }
    if run.ranks.main:
        write_json(run.folder / "report.json", report)
        plot_curves(run.folder / "curves.png", run.history, run.tiles.task)
        final = report["test"] or report["val"]
        split = "test" if report["test"] else "validation"
        plot_confusion(
            run.folder / "confusion.png",
            np.array(final["confusion"]),
            run.class_names,
            f"Confusion on the {split} split (best epoch {run.best_epoch})",
        )
    return report


def train(
    tiles: str | os.PathLike,
    out: str | os.PathLike,
    config: TrainConfig | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    augment=None,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train a model from random weights on a tiles folder; returns the final report.

    ``augment`` overrides ``config.aug`` with an albumentations transform or any callable
    ``(image, mask, seed) -> (image, mask)``. With ``resume``, the run's own checkpoint decides
    the settings and training continues where it stopped, on the same schedule.
    """
    folder = Path(out)
    run, checkpoint = setup(tiles, folder, config or TrainConfig(), resume, overwrite, augment)
    if not run.ranks.main:  # under torchrun, rank 0 alone reports
        progress = log = None
    first = checkpoint["epoch"] if checkpoint else 1
    start = checkpoint["step"] if checkpoint else 0
    partial = tuple(checkpoint["partial_loss"]) if checkpoint else (0.0, 0)
    epoch, stopped_early = first - 1, False
    for epoch in range(first, run.config.epochs + 1):
        train_stats = train_one_epoch(run, epoch, start, partial, progress)
        start, partial = 0, (0.0, 0)
        try:
            val = evaluate(run, "val")
            improved = finish_epoch(run, epoch, train_stats, val)
        except KeyboardInterrupt:  # the checkpoint on disk starts this epoch; resume repeats it
            raise TrainingInterrupted(run.folder, epoch, 0) from None
        if log is not None:
            log(epoch_line(run, epoch, train_stats, val, improved))
        patience = run.config.patience
        if patience and epoch - run.best_epoch >= patience:
            stopped_early = True
            break
    try:
        report = write_report(run, epoch, stopped_early)
    except KeyboardInterrupt:  # every epoch is saved; resume writes the report
        raise TrainingInterrupted(run.folder, epoch, 0) from None
    if distributed.launched() and dist.is_initialized():
        dist.destroy_process_group()
    return report


def epoch_line(run: Run, epoch: int, train: dict, val: dict, improved: bool) -> str:
    metric = metric_name(run.tiles.task)
    return (
        f"epoch {epoch:>3}/{run.config.epochs}  train loss {train['loss']:.4f}  "
        f"val loss {val['loss']:.4f}  accuracy {val['overall_accuracy']:.3f}  "
        f"{LABELS[metric]} {val[metric]:.3f}  {train['samples_per_s']:.0f} samples/s"
        + ("  *" if improved else "")
    )
