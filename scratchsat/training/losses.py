"""Training losses: cross-entropy, optionally plus a soft Dice term that weighs every class
alike however few pixels it has (mean IoU's view of the map, not overall accuracy's)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

LOSSES = ("ce", "ce+dice")


class DiceCrossEntropy(nn.Module):
    """``cross_entropy + dice_weight * (1 − mean soft Dice)``.

    Soft Dice per class c over the batch's labelled pixels: ``2 Σ p_c y_c / (Σ p_c + Σ y_c)``
    with p the softmax and y the one-hot target; averaged over the classes that are in the
    batch's targets or predicted there, so a class absent from both neither helps nor hurts.
    Pixels labelled ``ignore_index`` count in neither term. Works for classification too
    (each patch is one "pixel").
    """

    def __init__(self, cross_entropy: nn.CrossEntropyLoss, dice_weight: float = 1.0) -> None:
        super().__init__()
        self.cross_entropy, self.dice_weight = cross_entropy, dice_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.cross_entropy(logits, target) + self.dice_weight * dice_loss(
            logits, target, self.cross_entropy.ignore_index
        )


def dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """``1 − mean soft Dice`` over the classes present in ``target`` or the prediction."""
    classes = logits.shape[1]
    probs = torch.softmax(logits.float(), dim=1).movedim(1, -1).reshape(-1, classes)
    flat = target.reshape(-1)
    keep = flat != ignore_index
    probs, flat = probs[keep], flat[keep]
    if flat.numel() == 0:
        return logits.sum() * 0.0  # nothing labelled: no gradient, no NaN
    onehot = F.one_hot(flat, classes).to(probs.dtype)
    overlap = (probs * onehot).sum(0)
    total = probs.sum(0) + onehot.sum(0)
    present = (onehot.sum(0) > 0) | (probs.argmax(1).bincount(minlength=classes) > 0)
    dice = 2 * overlap[present] / total[present].clamp_min(1e-6)
    return 1 - dice.mean()


def build_loss(
    name: str, weight: torch.Tensor | None, ignore_index: int, label_smoothing: float
) -> nn.Module:
    cross_entropy = nn.CrossEntropyLoss(
        weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing
    )
    if name == "ce":
        return cross_entropy
    if name == "ce+dice":
        return DiceCrossEntropy(cross_entropy)
    raise InputError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
