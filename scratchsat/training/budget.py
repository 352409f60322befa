"""``train --time-budget``: how many epochs fit in a duration on this machine.

Before training, a few steps and validation batches are timed on a copy of the model; the
epochs are then what the budget holds after the time already spent (reading and hashing the
tiles, building the model, the measurement itself) and the final report (validation and test
scored again, validation once more to fit the decision offsets, pictures). The schedule is
laid out over those epochs, so it ends within the budget rather than being cut short.

A few timed steps are a noisy estimate (a busy moment, first-call costs: on a shared 2-core
machine the same settings were given 13 and 22 epochs of a 3-minute budget), so once the first
epoch is done, its measured time (validation included, with a 5 % margin for drift) plans the
rest again: the epochs and the schedule are laid out anew from the step reached, while the
schedule is still rising. After every later epoch the plan is checked against the pace of the
last few epochs (a shared machine slows down for minutes at a time: 3-minute runs planned from
a 7 s epoch met 9–11 s epochs and ended 19–32 s late): when the epochs left would end past
the budget, there are fewer of them, and the schedule is laid out over those. When the pace
is back (a slow spell has passed), the time left is planned again and the epochs cut are
given back (3-minute runs on Brandenburg, whose plans slow epochs had shortened, took
140–159 s of the 180 in all; with the epochs given back, 175–179 s).
So that the plan does not swing with every epoch's noise, it grows only when the time left
holds :data:`GROW_STEP` epochs more at a pace :data:`GROW_MARGIN` slower, and by those.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch

from ..device import autocast, synchronize
from ..models.inputs import unwrap
from . import distributed
from .optim import build_optimizer, build_schedule, resize_schedule
from .steps import run_step, to_device, training_batch

if TYPE_CHECKING:  # types only: setup builds the run
    from .setup import Run

REPORT_S = 3.0  # writing report.json, the pictures and report.html, beyond scoring
RECENT = 3  # epochs whose mean pace checks the plan after the first
MARGIN = 1.05  # the epochs after the first planned as if 5 % slower: a shared machine's epochs
# drift (a 3-minute run planned from an epoch of 7.2 s averaged 7.6 s and ended 12 s late)
GROW_MARGIN = 1.15  # a plan grows only by the epochs that fit this much slower: after growing,
# the pace must slow by a tenth before the plan is shortened again
GROW_STEP = 2  # and only by this many epochs or more: no change of schedule for one epoch


@dataclass(frozen=True)
class Costs:
    """What one epoch costs on this machine, measured (seconds)."""

    step_s: float  # one training step
    val_batch_s: float  # one validation (or test) batch
    steps: int  # training steps an epoch
    val_batches: int
    test_batches: int
    calibrate: bool = False  # the report scores validation once more, to fit decision offsets

    @property
    def epoch_s(self) -> float:
        return self.steps * self.step_s + self.val_batches * self.val_batch_s

    @property
    def report_s(self) -> float:
        val_passes = 2 if self.calibrate else 1
        return (val_passes * self.val_batches + self.test_batches) * self.val_batch_s + REPORT_S


def epochs_for(budget_s: float, spent_s: float, costs: Costs) -> int:
    """The most epochs (at least 1) that, with the final report, end within the budget."""
    left = budget_s - spent_s - costs.report_s
    return max(1, math.floor(left / max(costs.epoch_s, 1e-9)))


@dataclass(frozen=True)
class Plan:
    """A budgeted run's clock, to plan again after each epoch, and the epochs' times."""

    budget_s: float
    started: float  # on ``clock``
    clock: Callable[[], float]
    report_s: float
    epoch_times: list[float] = field(default_factory=list)  # seconds, validation included


def epochs_after(
    plan: Plan, epochs_done: int, epoch_s: float, now: float, margin: float = MARGIN
) -> int:
    """All the epochs (at least those done) once ``epochs_done`` took ``epoch_s`` each, the
    rest planned ``margin`` slower (:data:`MARGIN`) so that the run ends within the budget."""
    left = plan.budget_s - (now - plan.started) - plan.report_s
    return epochs_done + max(0, math.floor(left / max(epoch_s * margin, 1e-9)))


def replanned(plan: Plan, epochs_done: int, planned: int, epoch_s: float, now: float) -> int:
    """The epochs in all after ``epochs_done`` of ``planned``, at a pace of ``epoch_s``: after
    the first epoch, those that fit; later, fewer when the plan would end past the budget,
    more when the time left holds :data:`GROW_STEP` more even at :data:`GROW_MARGIN` slower,
    else the plan as it is."""
    fits = epochs_after(plan, epochs_done, epoch_s, now)
    if epochs_done <= 1 or fits < planned:
        return fits
    roomy = epochs_after(plan, epochs_done, epoch_s, now, margin=GROW_MARGIN)
    return roomy if roomy >= planned + GROW_STEP else planned


def describe(budget_s: float, epochs: int, costs: Costs) -> str:
    return (
        f"time budget {budget_s:.0f} s: {epochs} epochs ({costs.step_s:.2f} s a step, "
        f"{costs.steps} steps an epoch, {costs.val_batches * costs.val_batch_s:.1f} s of "
        "validation)"
    )


def fit_budget(run: Run, started: float, clock: Callable[[], float] = time.perf_counter) -> str:
    """Choose the epochs that fit ``run.config.time_budget`` (seconds since ``started`` on
    ``clock`` count against it), lay the schedule out over them; returns what was chosen."""
    costs = measure_costs(run, clock)
    step_s, val_batch_s, spent = agreed(run, costs.step_s, costs.val_batch_s, clock() - started)
    costs = replace(costs, step_s=step_s, val_batch_s=val_batch_s)
    budget = float(run.config.time_budget or 0)
    epochs = epochs_for(budget, spent, costs)
    run.config = replace(run.config, epochs=epochs)
    total = epochs * len(run.loaders["train"])
    run.schedule = build_schedule(run.optimizer, run.config.schedule, total)
    run.plan = Plan(budget, started, clock, costs.report_s)
    return describe(budget, epochs, costs)


def agreed(run: Run, *seconds: float) -> list[float]:
    """The mean of each measurement over the processes (itself in a single process), so that
    under torchrun every process plans the same epochs."""
    if run.ranks.world_size == 1:
        return list(seconds)
    total = torch.tensor(seconds, dtype=torch.float32, device=run.device)
    distributed.all_sum(total)
    return (total / run.ranks.world_size).tolist()


def plan_again(run: Run, epoch: int, epoch_s: float) -> str | None:
    """After each epoch of a budgeted run, the epochs that fit (every process agrees on the
    mean of their measurements): after the first, as many as its measured time allows; after
    later ones, fewer when the pace of the last few would end past the budget, more when a
    slow spell has passed and the time left holds them (:func:`budget.replanned`). The
    schedule (and the EMA horizon) is laid out anew from the step reached. Says what changed,
    if anything."""
    plan = run.plan
    assert plan is not None
    plan.epoch_times.append(epoch_s)
    first = len(plan.epoch_times) == 1
    recent = plan.epoch_times[-RECENT:]
    pace, spent = agreed(run, sum(recent) / len(recent), plan.clock() - plan.started)
    epochs = replanned(plan, epoch, run.epochs, pace, plan.started + spent)
    if epochs == run.epochs:
        return None
    before, run.config = run.epochs, replace(run.config, epochs=epochs)
    total = epochs * len(run.loaders["train"])
    run.schedule = resize_schedule(run.schedule, run.optimizer, run.config.schedule, total)
    if run.ema is not None:
        from .setup import attach_ema

        attach_ema(run, {"ema": run.ema.state_dict()})
    took = (
        f"epoch {epoch} took {pace:.1f} s"
        if first
        else f"epochs {epoch - len(recent) + 1}–{epoch} took {pace:.1f} s on average"
    )
    return (
        f"time budget {plan.budget_s:.0f} s: {took}, so {epochs} epochs in all instead of {before}"
    )


def measure_costs(run: Run, clock: Callable[[], float], steps: int = 3) -> Costs:
    """Time training steps and validation batches on a copy of the model (the run's own
    model, optimizer and random state are left as they were)."""
    rng = torch.get_rng_state()
    model = copy.deepcopy(unwrap(run.model)).train()
    optimizer = build_optimizer(model, run.config.optimizer, run.config.lr, 0.0)
    scaler = torch.amp.GradScaler(run.device.type, enabled=run.scaler.is_enabled())  # its own
    batches = iter(run.loaders["train"])

    def step(batch) -> None:
        x, y = training_batch(run, batch, 0, 0)  # as an epoch's, with draws of no epoch's
        run_step(run, model, optimizer, x, y, scaler)

    step(next(batches))  # warm-up: first-call costs are not an epoch's
    begin, done = clock(), 0
    for batch in itertools.islice(batches, steps):
        step(batch)
        done += 1
    synchronize(run.device)
    step_s = (clock() - begin) / max(done, 1)
    model.eval()
    begin, done = clock(), 0
    with torch.no_grad():
        for batch in itertools.islice(run.loaders["val"], 2):
            x, _ = to_device(run, batch, augment=False)
            with autocast(run.device, run.amp_dtype):
                model(x)
            done += 1
    synchronize(run.device)
    val_batch_s = (clock() - begin) / max(done, 1)
    torch.set_rng_state(rng)
    test = len(run.loaders["test"]) if "test" in run.loaders else 0
    val = len(run.loaders["val"])
    return Costs(step_s, val_batch_s, len(run.loaders["train"]), val, test, run.config.calibrate)
