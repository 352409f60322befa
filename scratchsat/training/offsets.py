"""Decision offsets: one logit offset per class, fitted on the validation split after
training, so that the map's argmax serves the selection metric (mean IoU, or macro F1 for
patch classification) rather than the training loss's priors.

A network trained on small, imbalanced data decides with the class frequencies of its
training patches and of its class weights, not those of the scene: a rare class is
under-predicted without weights and may be over-predicted with them. Adding ``b_c`` to class
``c``'s logit is a prior shift (``softmax(z + b)`` = the probabilities re-weighted by
``exp(b)``); :func:`fit_offsets` picks ``b`` by coordinate ascent over a grid, one class at a
time, keeping a change only where the metric gains, then halves it: the validation split is
small and its optimum noisy (on Brandenburg the full offsets gained as much mean IoU on the
test split as half of them, with a third more seed spread, and on a rare-object task whose
validation lakes differ from the test lakes half of them cost half as much; README, quality
benchmark). The offsets go into the bias of the
network's output layer (:func:`output_bias`), so the bundle's probabilities, its maps, TTA,
ensembles and ONNX exports all carry them with no new code at predict time.

:func:`candidate_confusions` scores every grid value of one class in one pass over the
pixels: with the other classes' logits fixed, pixel ``i`` goes to ``c`` exactly when the offset
exceeds its margin ``max_{k≠c}(z_k + b_k) − z_c``, so the confusion matrices of all candidates
are cumulative sums of one histogram of margins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..bundle import save_bundle
from ..device import autocast
from ..geo.labels import IGNORE_INDEX
from ..metrics import update_confusion
from ..models.inputs import unwrap
from . import distributed
from .report import metric_name
from .steps import scoring_dtype, to_device

if TYPE_CHECKING:  # types only: setup builds the run
    from .setup import Run

GRID = torch.arange(-30, 31, dtype=torch.float32) / 10  # offsets −3 … 3 in steps of 0.1
PASSES = 3  # coordinate-ascent sweeps over the classes (it settles in one or two)
MIN_GAIN = 1e-4  # a change is kept only where the metric gains more than this
SHRINK = 0.5  # the offsets kept: this share of the validation optimum
MAX_SCORES = 20_000_000  # pixels × classes kept for fitting (80 MB; every n-th pixel beyond)


def metric_of(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """(…, K, K) confusion matrices (rows = truth) → (…) mean IoU or macro F1, over the
    classes present in the truth or the prediction, as :func:`scratchsat.metrics.scores`."""

    def metric(confusion: torch.Tensor) -> torch.Tensor:
        confusion = confusion.double()
        tp = confusion.diagonal(dim1=-2, dim2=-1)
        support, predicted = confusion.sum(-1), confusion.sum(-2)
        present = (support + predicted) > 0
        if name == "mean_iou":
            per_class = tp / (support + predicted - tp).clamp_min(1)
        elif name == "macro_f1":
            per_class = 2 * tp / (support + predicted).clamp_min(1)
        else:
            raise ValueError(f"no decision offsets for the metric {name!r}")
        return (per_class * present).sum(-1) / present.sum(-1).clamp_min(1)

    return metric


def confusion_of(scores: torch.Tensor, target: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """(K, K) confusion of ``argmax(scores + offsets)`` against ``target`` (rows = truth)."""
    k = scores.shape[1]
    confusion = torch.zeros(k, k, dtype=torch.int64, device=scores.device)
    update_confusion(confusion, (scores + offsets).argmax(1), target, IGNORE_INDEX)
    return confusion


def candidate_confusions(
    scores: torch.Tensor, target: torch.Tensor, offsets: torch.Tensor, c: int, grid: torch.Tensor
) -> torch.Tensor:
    """(G, K, K): the confusion with class ``c``'s offset set to each of ``grid`` (ascending),
    the other offsets as given; one pass over the (N, K) ``scores``."""
    k, g = scores.shape[1], len(grid)
    others = (scores + offsets).index_fill(1, torch.tensor([c], device=scores.device), -torch.inf)
    best_other, other = others.max(1)
    margin = best_other - scores[:, c]  # c wins with offset t exactly when t > margin
    first = torch.searchsorted(grid.to(scores.device), margin.contiguous(), right=True)  # 0 … G
    # pixels go to c for the candidates j >= first, to `other` for j < first
    to_other = torch.bincount((first * k + target) * k + other, minlength=(g + 1) * k * k)
    to_other = to_other.reshape(g + 1, k, k).flip(0).cumsum(0).flip(0)[1:]  # first > j
    to_c = torch.bincount(first * k + target, minlength=(g + 1) * k).reshape(g + 1, k)
    to_c = to_c.cumsum(0)[:g]  # first <= j
    confusion = to_other.clone()
    confusion[:, :, c] += to_c
    return confusion


def fit_offsets(
    scores: torch.Tensor,
    target: torch.Tensor,
    metric: str,
    reduce: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
    fixed: frozenset[int] = frozenset(),
) -> tuple[torch.Tensor, float, float]:
    """Offsets (K,) for the (N, K) log-probabilities ``scores`` of labelled pixels ``target``
    (N,): ``SHRINK`` times the optimum found, and the metric before and with them. Classes
    absent from ``target`` and those in ``fixed`` keep 0; a change is kept only where it gains
    more than ``MIN_GAIN``, the smallest such offset first.
    ``reduce`` sums confusion matrices across processes (each holds a shard of the pixels)."""
    score = metric_of(metric)
    k = scores.shape[1]
    offsets = torch.zeros(k, device=scores.device)
    support = reduce(torch.bincount(target, minlength=k))
    start = best = float(score(reduce(confusion_of(scores, target, offsets))))
    grid = GRID.to(scores.device)
    by_size = sorted(range(len(grid)), key=lambda j: (abs(float(grid[j])), float(grid[j])))
    for _ in range(PASSES):
        changed = False
        for c in range(k):
            if support[c] == 0 or c in fixed:
                continue
            values = score(reduce(candidate_confusions(scores, target, offsets, c, grid)))
            for j in by_size:
                if float(values[j]) > best + MIN_GAIN:
                    best, changed = float(values[j]), True
                    offsets[c] = grid[j]
        if not changed:
            break
    offsets = torch.round(offsets * SHRINK * 100) / 100  # to 0.01, as recorded
    kept = float(score(reduce(confusion_of(scores, target, offsets))))
    return offsets.cpu(), start, kept


def moved_offsets(offsets: dict[str, float]) -> str:
    """Decision offsets by class name, those not 0 (``farm +0.50, grass -1.30``), or all 0."""
    return ", ".join(f"{name} {v:+.2f}" for name, v in offsets.items() if v) or "all 0"


def output_bias(model: nn.Module, classes: int) -> nn.Parameter | None:
    """The bias of the network's output layer (built-in models: ``head`` for segmentation,
    ``classifier`` or torchvision's ``fc`` for patch classification), or None where the model
    has none of ``classes`` values (a registered model of your own: no offsets are fitted)."""
    net = unwrap(model)
    net = getattr(net, "net", net)  # WithIndices feeds the ratios to the network inside
    for name in ("head", "classifier", "fc"):
        layer = getattr(net, name, None)
        bias = getattr(layer, "bias", None)
        if isinstance(bias, nn.Parameter) and bias.shape == (classes,):
            return bias
    return None


def calibrate(run: Run, fitted: list[float] | None) -> dict | None:
    """With ``calibrate``: fit decision offsets (:mod:`.offsets`) on the validation split to
    the best weights, add them to the output layer's bias and save the bundle again, the
    offsets recorded in its weights and model.json. ``fitted``: offsets the saved weights
    already hold (a report written again on resume), taken out first so they are fitted once.
    None where nothing is fitted (no validation split, one class, no output bias)."""
    bias = calibration_bias(run)
    if bias is None:
        return None
    with torch.no_grad():
        if fitted is not None:
            bias.sub_(torch.tensor(fitted, dtype=bias.dtype, device=bias.device))
        scores, target = split_scores(run, "val")

        def reduce(confusion: torch.Tensor) -> torch.Tensor:
            distributed.all_sum(confusion)  # each process holds a shard of the pixels
            return confusion

        metric = metric_name(run.tiles.task)
        thin = run.thin_classes
        fixed = frozenset(i for i, name in enumerate(run.class_names) if name in thin)
        offsets, before, after = fit_offsets(scores, target, metric, reduce, fixed)
        values = [round(float(v), 2) for v in offsets]  # on the grid: as recorded, as added
        bias.add_(torch.tensor(values, dtype=bias.dtype, device=bias.device))
    if run.ranks.main:
        from .setup import bundle_meta

        meta = {**bundle_meta(run).to_dict(), "decision_offsets": values}
        save_bundle(run.folder, run.scored, meta)
    return {
        "offsets": dict(zip(run.class_names, values, strict=True)),
        "metric": metric,
        "val_before": before,
        "val_after": after,
    }


def calibration_bias(run: Run) -> torch.nn.Parameter | None:
    """The output bias that will hold the decision offsets, or None where none are fitted:
    ``calibrate`` off, no validation split, one class, or no output bias."""
    k = run.tiles.num_classes
    if not run.config.calibrate or "val" not in run.loaders or k < 2:
        return None
    return output_bias(run.scored, k)


@torch.no_grad()
def split_scores(run: Run, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) float32 log-probabilities of a split's labelled pixels (every n-th, where N × K
    would pass ``offsets.MAX_SCORES``) in the precision ``predict`` uses, and their (N,)
    labels."""
    dtype, model = scoring_dtype(run), run.scored.eval()
    patch = run.tiles.patch_size**2 if run.tiles.task == "segmentation" else 1
    scores_n = run.tiles.splits.get(split, 0) * patch * run.tiles.num_classes
    every = max(1, -(-scores_n // MAX_SCORES))
    scores, targets = [], []
    for batch in run.loaders[split]:
        run.stop.check()
        x, y = to_device(run, batch, augment=False)
        with autocast(run.device, dtype):
            logits = model(x)
        k = logits.shape[1]
        if logits.dim() == 4:  # segmentation: pixels as rows
            logits, y = logits.permute(0, 2, 3, 1).reshape(-1, k), y.reshape(-1)
        keep = (y != IGNORE_INDEX).nonzero().squeeze(1)[::every]
        scores.append(torch.log_softmax(logits[keep].float(), dim=1))
        targets.append(y[keep])
    return torch.cat(scores), torch.cat(targets)
