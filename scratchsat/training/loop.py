"""Train a network from random weights on a tiles folder (``scratchsat train``).

Reads top to bottom: :func:`train` sets up a :class:`Run` (data, model, optimizer, schedule),
then alternates :func:`train_one_epoch` and :func:`evaluate`, writing the run folder as it goes.
On a GPU it uses bf16 autocast (fp16 with a gradient scaler where bf16 is missing),
channels_last, pinned memory and non-blocking copies, and reads the loss back to the host
only when the progress bar is refreshed; on a CPU with native bf16, bf16 autocast too. A
batch on the device and the optimizer step are in :mod:`.steps`, ``--time-budget``'s planning
in :mod:`.budget`, the decision offsets fitted after training in :mod:`.offsets`.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import signal
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file

from ..bundle import save_bundle, save_checkpoint, save_weights, weights_offsets
from ..device import autocast
from ..errors import DivergedError, TrainingInterrupted
from ..geo.labels import IGNORE_INDEX
from ..geo.outputs import output_lock, write_text
from ..metrics import scores, update_confusion
from ..models.inputs import unwrap
from ..ranks import Ranks
from ..runfolder import RunFolder
from . import distributed, steps
from .budget import epochs_for, fit_budget, measure_costs, plan_again
from .offsets import calibrate, calibration_bias
from .page import write_report_html
from .report import (
    LABELS,
    SPLIT_WORDS,
    Report,
    epoch_row,
    metric_name,
    plot_confusion,
    plot_curves,
    write_metrics_csv,
)
from .setup import (
    Run,
    StopRequested,
    TrainConfig,
    attach_ema,
    bundle_meta,
    checkpoint_state,
    setup,
    thin_line,
)
from .steps import precision, run_step, scoring_dtype, training_batch
from .tracking import check_trackers
from .tracking import trackers as follow

REFRESH_STEPS = 10  # progress (and the host read of the loss it needs) every N steps,
REFRESH_S = 1.0  # and at the first step of an epoch and whenever this long has passed
Progress = Callable[..., None]  # progress(done, total, **fields)


def train_one_epoch(
    run: Run, epoch: int, start: int, partial: tuple[float, int], progress: Progress | None
) -> dict:
    """One pass over the training split from batch ``start``; returns loss and speed."""
    run.model.train()
    run.sampler.set_epoch(epoch, start * run.config.batch_size)
    total = len(run.loaders["train"]) + start
    loss_sum = torch.tensor(partial[0], dtype=torch.float32, device=run.device)
    seen, done, begin = partial[1], start, time.perf_counter()  # done: finished steps
    shown = -math.inf  # when progress was last refreshed
    first_bad = torch.tensor(-1, device=run.device)  # first step with a non-finite loss
    in_step = False  # between the forward pass and the end of the update: state is mixed
    try:
        for step, batch in enumerate(run.loaders["train"], start=start + 1):
            x, y = training_batch(run, batch, epoch, step)
            in_step = True
            loss = run_step(run, run.model, run.optimizer, x, y)
            run.schedule.step()
            if run.ema is not None:
                run.ema.update_parameters(unwrap(run.model))
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step, first_bad)
            loss_sum += loss * len(x)
            seen += len(x)
            done, in_step = step, False
            now = time.perf_counter()
            if step % REFRESH_STEPS == 0 or step == total or now - shown >= REFRESH_S:
                check_finite(run, epoch, int(first_bad))  # the one host sync
                if progress is not None:
                    rate = (seen - partial[1]) / max(now - begin, 1e-9)
                    progress(step, total, epoch=epoch, loss=float(loss_sum) / seen, rate=rate)
                shown = now
            run.stop.check()  # Ctrl-C or SIGTERM: stop here, at a step boundary
    except KeyboardInterrupt as stop:
        # Exact only between steps: a forward pass has already moved BatchNorm's statistics.
        sums = (float(loss_sum), seen)
        raise interrupted(run, stop, epoch, done, sums, exact=not in_step) from None
    seconds = time.perf_counter() - begin
    local = (float(loss_sum), seen)  # this process's sums, for a checkpoint of the whole epoch
    counts = torch.tensor([seen - partial[1], seen], dtype=torch.float32, device=run.device)
    distributed.all_sum(loss_sum, counts)  # over all processes
    return {
        "loss": float(loss_sum) / max(float(counts[1]), 1),
        "seconds": seconds,
        "samples_per_s": float(counts[0]) / max(seconds, 1e-9),
        "steps": done,
        "partial": local,
    }


def interrupted(
    run: Run,
    stop: KeyboardInterrupt,
    epoch: int,
    step: int,
    partial: tuple[float, int],
    exact: bool,
) -> TrainingInterrupted:
    """Save a checkpoint of ``step`` finished steps of ``epoch`` where that is exact, and say
    what is on disk to continue from."""
    number = run.stop.signal_number or int(getattr(stop, "signal_number", signal.SIGINT))
    if exact and run.ranks.main:
        state = checkpoint_state(run, epoch, step, partial)
        save_checkpoint(run.files.checkpoint, state)
        run.saved_at = (epoch, step)
    if exact:
        return TrainingInterrupted(run.folder, epoch, step, signal_number=number)
    at = run.saved_at
    return TrainingInterrupted(
        run.folder,
        *(at or (epoch, step)),
        saved=False,
        resumable=at is not None,
        signal_number=number,
    )


def check_finite(run: Run, epoch: int, first_bad: int) -> None:
    if first_bad >= 0:
        last = f"end of epoch {epoch - 1}" if epoch > 1 else "none yet"
        raise DivergedError(
            f"training diverged: the loss became NaN or infinite at epoch {epoch}, step "
            f"{first_bad}; the last good checkpoint ({last}) is kept in {run.folder}. Lower "
            f"--lr (now {run.config.lr:g}), or try --no-amp or --class-weights none"
        )


@torch.no_grad()
def evaluate(run: Run, split: str, final: bool = False) -> dict:
    """Loss (unweighted, over labelled pixels) and confusion-matrix scores on a split, under
    the training's autocast; ``final``: in the precision ``predict`` uses by default on this
    device, so that the report's scores are those of the bundle's maps."""
    dtype = scoring_dtype(run) if final else run.amp_dtype
    model = run.scored if run.ema is not None else run.model
    model.eval()
    k = run.tiles.num_classes
    confusion = torch.zeros(k, k, dtype=torch.int64, device=run.device)
    loss_sum = torch.zeros((), dtype=torch.float32, device=run.device)
    count = torch.zeros((), dtype=torch.int64, device=run.device)
    for batch in run.loaders[split]:
        run.stop.check()
        x, y = steps.to_device(run, batch, augment=False)
        with autocast(run.device, dtype):
            logits = model(x)
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
    improved = score > run.best or run.keeps_last  # a thin validation split picks nothing
    if improved:
        run.best, run.best_epoch = score, epoch
    if run.ranks.main:
        if improved:
            save_bundle(run.folder, run.scored, bundle_meta(run))
        save_weights(run.scored, run.files.last)
        state = checkpoint_state(run, epoch + 1, 0, (0.0, 0))
        save_checkpoint(run.files.checkpoint, state)
        run.saved_at = (epoch + 1, 0)
        write_metrics_csv(run.files.metrics, run.history)
    return improved


def write_report(run: Run, epochs_run: int, stopped_early: bool) -> dict:
    """Reload the best weights; score validation and test; write report.json and the plots."""
    distributed.barrier()  # rank 0 has written the best weights
    path = run.files.weights
    run.scored.load_state_dict(load_file(str(path), device=str(run.device)))
    offsets = calibrate(run, weights_offsets(path))
    report = Report(
        task=run.tiles.task,
        metric=metric_name(run.tiles.task),
        best_epoch=run.best_epoch,
        epochs_run=epochs_run,
        stopped_early=stopped_early,
        device=str(run.device),
        precision=precision(run),
        scored_in=precision(scoring_dtype(run)),
        class_weights=loss_weights(run),
        decision_offsets=offsets,
        val=evaluate(run, "val", final=True),
        test=evaluate(run, "test", final=True) if "test" in run.loaders else None,
        thin_validation=run.thin_classes or None,
    )
    if run.ranks.main:
        report.write(run.files.report)
        plot_curves(run.files.curves, run.history, run.tiles.task)
        split = SPLIT_WORDS[report.final_split]
        plot_confusion(
            run.files.confusion,
            np.array(report.final["confusion"]),
            run.class_names,
            f"Confusion on the {split} split (best epoch {run.best_epoch})",
        )
        write_report_html(run, report)
        write_model_stac(run)
    return report.to_dict()


def write_model_stac(run: Run) -> None:
    """``RUN/model.stac.json``: the bundle as a STAC Item of the ML Model extension."""
    from ..bundle import BundleMeta, read_model_json
    from ..geo.mlm import model_item, training_footprint, write_model_item

    item = model_item(
        BundleMeta.from_dict(read_model_json(run.folder)),
        run.files.weights,
        run.files.stac,
        framework="PyTorch",
        framework_version=torch.__version__,
        parameters=sum(p.numel() for p in run.scored.parameters()),
        footprint=training_footprint(run.tiles.info.get("sources", [])),
    )
    write_model_item(item, run.files.stac)


def train(
    tiles: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    config: TrainConfig | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    augment=None,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
    explicit: Collection[str] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    dry_run: bool = False,
    trackers: Sequence[str] = (),
    settings_toml: str | None = None,
) -> dict:
    """Train a model from random weights on a tiles folder (or the union of several, see
    :func:`~scratchsat.tiles.format.union_tiles`); returns the final report (with
    ``dry_run``: what training would be, from a few timed steps, and nothing written).

    ``augment`` overrides ``config.aug`` with an albumentations transform or any callable
    ``(image, mask, seed) -> (image, mask)``. With ``resume``, the run's own checkpoint decides
    the settings and training continues where it stopped, on the same schedule; settings in
    ``config`` that would change the run are refused (``explicit``: the names of the settings
    the caller chose; by default those that differ from :class:`TrainConfig`'s defaults).

    Ctrl-C and SIGTERM stop training at the next step boundary with a checkpoint of exactly
    the finished steps (:class:`TrainingInterrupted`); a second signal stops at once.

    ``trackers``: ``tensorboard`` and/or ``mlflow`` (see :mod:`.tracking`) follow the run.
    ``settings_toml``: the command's settings as a config file, kept as ``RUN/train.toml``.
    """
    folder, started = Path(out), clock()
    check_trackers(trackers)
    if dry_run:
        return dry_run_report(tiles, folder, config, augment, clock)
    main = Ranks.from_env().main  # under torchrun, rank 0 holds the folder
    with output_lock(folder) if main else contextlib.nullcontext():
        run, checkpoint = setup(tiles, folder, config, resume, overwrite, augment, explicit)
        if run.config.time_budget and checkpoint is None:  # a resumed run keeps its epochs
            chosen = fit_budget(run, started, clock)
            if log is not None and run.ranks.main:
                log(chosen)
        attach_ema(run, checkpoint)
        if run.thin_classes and log is not None and run.ranks.main:
            log(thin_line(run.thin_classes, run.tiles.task))
        with run.stop.installed(), follow(run, trackers) as followers:
            report = train_run(run, checkpoint, progress, log, followers)
        if settings_toml and run.ranks.main:
            write_text(RunFolder(folder).settings, settings_toml, overwrite=True)
        return report


def dry_run_report(tiles, folder: Path, config, augment, clock) -> dict:
    """``train --dry-run``: the model, the data, steps and epochs, and time and memory from a
    few steps timed on a copy of the model; no run folder, no lock, nothing written."""
    import resource

    started = clock()
    run, _ = setup(tiles, folder, config, False, True, augment, None, dry_run=True)
    cuda = run.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(run.device)
    costs = measure_costs(run, clock)
    epochs = run.epochs
    if run.config.time_budget:
        epochs = epochs_for(float(run.config.time_budget), clock() - started, costs)
    if cuda:
        memory = torch.cuda.max_memory_allocated(run.device)
        where = f"{run.device} (peak allocated while timing)"
    else:
        memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        where = "cpu (peak resident memory of this process, data and timed steps included)"
    model = unwrap(run.model)
    return {
        "dry_run": True,
        "model": run.model_config.name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": str(run.device),
        "precision": precision(run),
        "class_weights": loss_weights(run),
        "calibrate": calibration_bias(run) is not None,
        "patches": dict(run.tiles.splits),
        "batch_size": run.config.batch_size,
        "steps_per_epoch": costs.steps,
        "epochs": epochs,
        "step_s": costs.step_s,
        "epoch_s": costs.epoch_s,
        "estimated_s": epochs * costs.epoch_s + costs.report_s,
        "memory_bytes": int(memory),
        "memory_measured_on": where,
    }


def loss_weights(run: Run) -> dict[str, float] | None:
    """The cross-entropy's weight per class name (``--class-weights``), or None: unweighted."""
    loss = run.loss_fn
    weight = getattr(getattr(loss, "cross_entropy", loss), "weight", None)
    if weight is None:
        return None
    names = [c["name"] for c in run.tiles.classes]
    return {n: round(float(w), 4) for n, w in zip(names, weight.tolist(), strict=True)}


def train_run(
    run: Run,
    checkpoint: dict | None,
    progress: Progress | None,
    log: Callable | None,
    followers: Sequence = (),
) -> dict:
    """The epochs of a set-up run, from its checkpoint where it has one; then the report
    (each epoch and the report also go to ``followers``, the ``--log`` trackers)."""
    if not run.ranks.main:  # under torchrun, rank 0 alone reports
        progress = log = None
    first = checkpoint["epoch"] if checkpoint else 1
    start = checkpoint["step"] if checkpoint else 0
    partial = tuple(checkpoint["partial_loss"]) if checkpoint else (0.0, 0)
    epoch, stopped_early = first - 1, False
    for epoch in itertools.count(first):
        if epoch > run.epochs:  # the epochs may be planned again after the first
            epoch -= 1
            break
        begun = run.plan.clock() if run.plan is not None else 0.0
        train_stats = train_one_epoch(run, epoch, start, partial, progress)
        start, partial = 0, (0.0, 0)
        try:
            val = evaluate(run, "val")
            if run.plan is not None:
                replanned = plan_again(run, epoch, run.plan.clock() - begun)
                if replanned and log is not None and run.ranks.main:
                    log(replanned)
            improved = finish_epoch(run, epoch, train_stats, val)
        except StopRequested as stop:  # every step of the epoch is done: resume validates
            steps, sums = train_stats["steps"], train_stats["partial"]
            raise interrupted(run, stop, epoch, steps, sums, exact=True) from None
        except KeyboardInterrupt as stop:  # forced: what is on disk stays
            raise interrupted(run, stop, epoch, 0, (0.0, 0), exact=False) from None
        if log is not None:
            log(epoch_line(run, epoch, train_stats, val, improved))
        for follower in followers:
            follower.epoch(run.history[-1])
        patience = run.config.patience
        if patience and epoch - run.best_epoch >= patience:
            stopped_early = True
            break
    try:
        report = write_report(run, epoch, stopped_early)
    except KeyboardInterrupt as stop:  # every epoch is saved; resume writes the report
        raise interrupted(run, stop, epoch, 0, (0.0, 0), exact=False) from None
    for follower in followers:
        follower.finish(run, report)
    if distributed.launched() and dist.is_initialized():
        dist.destroy_process_group()
    return report


def epoch_line(run: Run, epoch: int, train: dict, val: dict, improved: bool) -> str:
    metric = metric_name(run.tiles.task)
    return (
        f"epoch {epoch:>3}/{run.epochs}  train loss {train['loss']:.4f}  "
        f"val loss {val['loss']:.4f}  accuracy {val['overall_accuracy']:.3f}  "
        f"{LABELS[metric]} {val[metric]:.3f}  {train['samples_per_s']:.0f} samples/s"
        + ("  *" if improved else "")
    )
