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

import math
from collections.abc import Callable
from dataclasses import dataclass, field

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
