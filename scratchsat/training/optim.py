"""Optimizers, learning-rate schedules and class weights for training, and the one optimizer
step (:func:`optimizer_step`) that the epochs, the time budget's timing and ``bench`` share."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..device import autocast
from ..errors import InputError


def optimizer_step(
    model: nn.Module,
    loss_fn,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    dtype: torch.dtype | None,
) -> torch.Tensor:
    """One training step: the forward pass under autocast to ``dtype`` (None: full
    precision), the loss, the backward pass (scaled where fp16 needs it) and the update.
    Returns the loss, detached (reading it is a host sync; the caller chooses when)."""
    with autocast(device, dtype):
        loss = loss_fn(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("onecycle", "cosine", "none")
CLASS_WEIGHTS = ("none", "inverse", "sqrt-inverse", "sqrt-median")


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float):
    """AdamW or SGD with Nesterov momentum; no weight decay on biases and norm weights."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim > 1 else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    raise InputError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def lr_factor(schedule: str, step: int, total: int, warmup: float = 0.05) -> float:
    """Multiplier of the peak learning rate at ``step`` of ``total`` optimizer steps.

    - ``onecycle``: Smith's 1cycle policy (as torch's OneCycleLR, without momentum cycling):
      cosine rise from 1/25 of the peak over the first 30 %, then cosine fall to 1/10⁴ of it;
    - ``cosine``: linear warm-up over ``warmup`` of the steps, then cosine decay to 0;
    - ``none``: constant.
    """
    t = min(step, total) / max(total, 1)
    if schedule == "onecycle":
        start, end, rise = 1 / 25, 1 / 25e4, 0.3
        if t < rise:
            return start + (1 - start) * (1 - math.cos(math.pi * t / rise)) / 2
        return end + (1 - end) * (1 + math.cos(math.pi * (t - rise) / (1 - rise))) / 2
    if schedule == "cosine":
        if t < warmup:
            return (t + 1 / max(total, 1)) / warmup
        return (1 + math.cos(math.pi * (t - warmup) / (1 - warmup))) / 2
    if schedule == "none":
        return 1.0
    raise InputError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


def build_schedule(optimizer, schedule: str, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step schedule whose state is only a step count (so checkpoints hold no code)."""
    lr_factor(schedule, 0, total_steps)  # validates the name
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(schedule, step, total_steps)
    )


def resize_schedule(
    schedule: torch.optim.lr_scheduler.LambdaLR, optimizer, name: str, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The same schedule laid out over ``total_steps``, at the step ``schedule`` has reached
    (the optimizer's learning rate set for that step, as the next step would set it)."""
    done = schedule.last_epoch
    resized = build_schedule(optimizer, name, total_steps)
    resized.load_state_dict(schedule.state_dict())
    lrs = [base * lr_factor(name, done, total_steps) for base in resized.base_lrs]
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    resized._last_lr = lrs  # what get_last_lr() reports until the next step
    return resized


def class_weights(counts: np.ndarray, mode: str) -> np.ndarray | None:
    """Loss weights from training counts per class: ``inverse`` (1/n) or ``sqrt-inverse``
    (1/√n), scaled so the classes that occur average 1; ``sqrt-median``: √(median / n) for
    the classes rarer than the median count of those that occur, 1 for the others (balanced
    data is left as it is). Absent classes get 0."""
    if mode == "none":
        return None
    if mode not in CLASS_WEIGHTS:
        raise InputError(
            f"unknown class weighting {mode!r}; choose one of {', '.join(CLASS_WEIGHTS)}"
        )
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    if mode == "sqrt-median":
        median = np.median(counts[present])
        weights[present] = np.maximum(1.0, np.sqrt(median / counts[present]))
        return weights.astype(np.float32)
    power = 1.0 if mode == "inverse" else 0.5
    weights[present] = counts[present] ** -power
    weights[present] /= weights[present].mean()
    return weights.astype(np.float32)
