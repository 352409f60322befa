"""What a training run leaves for people: ``report.json`` (:class:`Report`, written and read
only here), ``metrics.csv``, ``curves.png`` and ``confusion.png``."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..geo.outputs import write_atomically, write_json

LABELS = {"mean_iou": "mean IoU", "macro_f1": "macro F1", "overall_accuracy": "accuracy"}
SPLIT_WORDS = {"val": "validation", "test": "test"}  # how a page or a message names a split


@dataclass(frozen=True)
class Report:
    """``report.json``: how a run ended and its final scores, the best epoch's weights scored
    again on the validation split and (where there is one) the test split."""

    task: str
    metric: str  # the validation score that picked the best epoch (metric_name)
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    device: str
    precision: str  # what training computed in
    scored_in: str  # what the final scores were computed in
    class_weights: dict | None
    decision_offsets: dict | None
    val: dict
    test: dict | None
    thin_validation: dict | None = None  # class → validation pixels, where too few: last epoch

    @property
    def final(self) -> dict:
        """The scores a run is judged by: the test split's, else the validation split's."""
        return self.test or self.val

    @property
    def final_split(self) -> str:
        """``test`` or ``val``: whose scores :attr:`final` are."""
        return "test" if self.test else "val"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Report:
        known: dict = {f.name: data.get(f.name) for f in fields(cls)}
        return cls(**known)

    def write(self, path: Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def read(cls, path: Path) -> Report | None:
        """A run's report, or None where the run has none (it has not finished)."""
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{path} cannot be read as JSON ({exc}); train again") from None
        if not isinstance(data, dict) or not isinstance(data.get("val"), dict):
            raise InputError(f"{path} is not a scratchsat report.json (no val scores)")
        return cls.from_dict(data)


def metric_name(task: str) -> str:
    """The validation score that picks the best epoch."""
    return "mean_iou" if task == "segmentation" else "macro_f1"


def write_metrics_csv(path: Path, history: Sequence[dict]) -> None:
    """One row per epoch; per-class columns are ``val_<score>_<class name>``."""
    if not history:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_atomically(path, lambda tmp: tmp.write_text(buffer.getvalue()))


def epoch_row(epoch: int, lr: float, train: dict, val: dict, task: str) -> dict:
    """A metrics.csv row from the epoch's training summary and validation scores."""
    score = "iou" if task == "segmentation" else "f1"
    row = {
        "epoch": epoch,
        "lr": lr,
        "train_loss": train["loss"],
        "val_loss": val["loss"],
        "val_overall_accuracy": val["overall_accuracy"],
        f"val_{metric_name(task)}": val[metric_name(task)],
        "seconds": train["seconds"],
        "samples_per_s": train["samples_per_s"],
    }
    for c in val["classes"]:
        row[f"val_{score}_{c['name']}"] = c[score]
    return row


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt, plt.figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(plt, fig, path: Path) -> None:
    write_atomically(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def _png(plt, fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def plot_curves(path: Path, history: Sequence[dict], task: str) -> None:
    """Training and validation loss, validation accuracy and the selection metric per epoch."""
    plt, fig = _figure(9, 3.6)
    epochs = [row["epoch"] for row in history]
    left, right = fig.subplots(1, 2)
    left.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    left.plot(epochs, [r["val_loss"] for r in history], "o-", label="validation")
    left.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    left.legend()
    metric = metric_name(task)
    right.plot(epochs, [r["val_overall_accuracy"] for r in history], "o-", label="overall accuracy")
    right.plot(epochs, [r[f"val_{metric}"] for r in history], "o-", label=LABELS[metric])
    right.set(xlabel="epoch", ylabel="score", title="Validation", ylim=(0, 1))
    right.legend()
    for ax in (left, right):
        ax.grid(alpha=0.3)
    _save(plt, fig, path)


def plot_confusion(path: Path, confusion: np.ndarray, names: Sequence[str], title: str) -> None:
    """Row-normalised confusion matrix (truth in rows) with counts in the cells."""
    png = confusion_png(confusion, names, title)
    write_atomically(path, lambda tmp: tmp.write_bytes(png))


def confusion_png(confusion: np.ndarray, names: Sequence[str], title: str) -> bytes:
    """:func:`plot_confusion`'s picture as PNG bytes."""
    confusion = np.asarray(confusion)
    k = len(names)
    plt, fig = _figure(2.5 + 0.55 * k, 2 + 0.5 * k)
    ax = fig.subplots()
    totals = confusion.sum(axis=1, keepdims=True)
    share = np.divide(confusion, totals, out=np.zeros(confusion.shape), where=totals > 0)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the true class")
    ax.set(xticks=range(k), yticks=range(k), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(names, rotation=45, ha="right")
    ax.set_yticklabels(names)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                colour = "white" if share[i, j] > 0.6 else "black"
                ax.text(
                    j, i, f"{confusion[i, j]:,}", ha="center", va="center", color=colour, fontsize=7
                )
    return _png(plt, fig)
