"""Training losses: cross-entropy, optionally plus a soft Dice term that weighs every class
alike however few pixels it has, or the Lovász-softmax surrogate of 1 − mean IoU (mean IoU's
view of the map, not overall accuracy's)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

LOSSES = ("ce", "ce+dice", "ce+lovasz")


def labelled_probabilities(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities ``(pixels, classes)`` and class ids of the labelled pixels (each
    patch is one "pixel" for classification)."""
    classes = logits.shape[1]
    probs = torch.softmax(logits.float(), dim=1).movedim(1, -1).reshape(-1, classes)
    flat = target.reshape(-1)
    keep = flat != ignore_index
    return probs[keep], flat[keep]


def dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """``1 − mean soft Dice`` over the classes present in ``target`` or the prediction."""
    classes = logits.shape[1]
    probs, flat = labelled_probabilities(logits, target, ignore_index)
    if flat.numel() == 0:
        return logits.sum() * 0.0  # nothing labelled: no gradient, no NaN
    onehot = F.one_hot(flat, classes).to(probs.dtype)
    overlap = (probs * onehot).sum(0)
    total = probs.sum(0) + onehot.sum(0)
    present = (onehot.sum(0) > 0) | (probs.argmax(1).bincount(minlength=classes) > 0)
    dice = 2 * overlap[present] / total[present].clamp_min(1e-6)
    return 1 - dice.mean()


def lovasz_softmax(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Mean over the classes labelled in the batch of the Lovász extension of their Jaccard
    loss, evaluated at the softmax errors of the batch's labelled pixels."""
    probs, flat = labelled_probabilities(logits, target, ignore_index)
    losses = []
    for c in range(logits.shape[1]):
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


class CrossEntropyPlus(nn.Module):
    """``cross_entropy + weight * term(logits, target, ignore_index)``; ``term`` is the
    subclass's."""

    term: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]

    def __init__(self, cross_entropy: nn.CrossEntropyLoss, weight: float = 1.0) -> None:
        super().__init__()
        self.cross_entropy, self.weight = cross_entropy, weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        extra = type(self).term(logits, target, self.cross_entropy.ignore_index)
        return self.cross_entropy(logits, target) + self.weight * extra


class DiceCrossEntropy(CrossEntropyPlus):
    """``cross_entropy + weight * (1 − mean soft Dice)``.

    Soft Dice per class c over the batch's labelled pixels: ``2 Σ p_c y_c / (Σ p_c + Σ y_c)``
    with p the softmax and y the one-hot target; averaged over the classes that are in the
    batch's targets or predicted there, so a class absent from both neither helps nor hurts.
    Pixels labelled ``ignore_index`` count in neither term. Works for classification too
    (each patch is one "pixel").
    """

    term = staticmethod(dice_loss)


class LovaszCrossEntropy(CrossEntropyPlus):
    """``cross_entropy + lovasz_softmax``: the Lovász-softmax term (Berman, Rannen Triki and
    Blaschko, CVPR 2018) is the convex extension of each class's Jaccard loss ``1 − IoU`` to
    probabilities, so it optimises mean IoU itself; it equals ``1 − IoU`` averaged over the
    classes present when the probabilities are one-hot."""

    term = staticmethod(lovasz_softmax)


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
