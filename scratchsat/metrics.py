"""Confusion matrices and the scores read from them (shared by training and ``evaluate``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def update_confusion(
    confusion: torch.Tensor, pred: torch.Tensor, target: torch.Tensor, ignore_index: int
) -> None:
    """Add ``pred`` against ``target`` (any equal shapes) to ``confusion`` (K, K), rows = truth.
    Stays on the tensors' device: no host synchronisation."""
    k = confusion.shape[0]
    keep = target != ignore_index
    index = target[keep] * k + pred[keep]
    confusion += torch.bincount(index, minlength=k * k).reshape(k, k)


def scores(confusion: np.ndarray, names: Sequence[str] | None = None) -> dict:
    """Overall accuracy, mean IoU, macro F1 and per-class IoU, F1, precision, recall, support.

    Means are over classes that occur in the truth or the prediction; a class absent from both
    has no score (null).
    """
    confusion = np.asarray(confusion, dtype=np.int64)
    tp = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    total = confusion.sum()
    present = (support + predicted) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(present, tp / (support + predicted - tp), np.nan)
        precision = np.where(predicted > 0, tp / predicted, np.where(present, 0.0, np.nan))
        recall = np.where(support > 0, tp / support, np.where(present, 0.0, np.nan))
        f1 = np.where(present, 2 * tp / (support + predicted), np.nan)
    names = list(names) if names is not None else [str(i) for i in range(len(confusion))]
    classes = [
        {
            "name": name,
            "iou": _number(iou[i]),
            "f1": _number(f1[i]),
            "precision": _number(precision[i]),
            "recall": _number(recall[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(names)
    ]
    return {
        "overall_accuracy": float(tp.sum() / total) if total else None,
        "mean_iou": float(np.nanmean(iou)) if present.any() else None,
        "macro_f1": float(np.nanmean(f1)) if present.any() else None,
        "classes": classes,
        "confusion": confusion.tolist(),
    }


def _number(value: float) -> float | None:
    return None if np.isnan(value) else float(value)
