"""Training losses: cross-entropy, optionally plus a soft Dice term that weighs every class
alike however few pixels it has, or the Lovász-softmax surrogate of 1 − mean IoU (mean IoU's
view of the map, not overall accuracy's)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

LOSSES = ("ce", "ce+dice", "ce+lovasz")


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


class LovaszCrossEntropy(nn.Module):
    """``cross_entropy + lovasz_softmax``: the Lovász-softmax term (Berman, Rannen Triki and
    Blaschko, CVPR 2018) is the convex extension of each class's Jaccard loss ``1 − IoU`` to
    probabilities, so it optimises mean IoU itself; it equals ``1 − IoU`` averaged over the
    classes present when the probabilities are one-hot."""

    def __init__(self, cross_entropy: nn.CrossEntropyLoss) -> None:
        super().__init__()
        self.cross_entropy = cross_entropy

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.cross_entropy(logits, target) + lovasz_softmax(
            logits, target, self.cross_entropy.ignore_index
        )


def lovasz_softmax(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Mean over the classes labelled in the batch of the Lovász extension of their Jaccard
    loss, evaluated at the softmax errors of the batch's labelled pixels."""
    classes = logits.shape[1]
    probs = torch.softmax(logits.float(), dim=1).movedim(1, -1).reshape(-1, classes)
    flat = target.reshape(-1)
    keep = flat != ignore_index
    probs, flat = probs[keep], flat[keep]
    losses = []
    for c in range(classes):
        truth = (flat == c).to(probs.dtype)
        if not truth.any():
            continue
        errors, order = torch.sort((truth - probs[:, c]).abs(), descending=True)
        truth = truth[order]
        # Jaccard loss of the set of the k largest errors, k = 1 … n; its increments are the
        # extension's gradient, each error's weight.
        inside = truth.sum() - truth.cumsum(0)
        union = truth.sum() + (1 - truth).cumsum(0)
        jaccard = 1 - inside / union
        weights = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
        losses.append(torch.dot(errors, weights))
    if not losses:
        return logits.sum() * 0.0  # nothing labelled: no gradient, no NaN
    return torch.stack(losses).mean()


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
    if name == "ce+lovasz":
        return LovaszCrossEntropy(cross_entropy)
    raise InputError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
