"""A training run's folder (``scratchsat train --out``) and the one place its files are named.

Every module that writes or reads a file of a run asks :class:`RunFolder` for its path;
``RunFolder.FILES`` is what ``train`` writes (what ``--overwrite`` replaces, what an earlier
run is recognised by). Free of torch, so the command line and ``info`` use it too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunFolder:
    """The files of a run folder, by role."""

    path: Path

    MODEL_JSON = "model.json"  # the bundle: its contract, classes, settings (bundle.py)
    WEIGHTS = "model.safetensors"  # the bundle's weights: the best (or final) epoch's
    LAST = "last.safetensors"  # the last epoch's weights
    CHECKPOINT = "checkpoint.pt"  # what --resume continues from
    METRICS = "metrics.csv"  # one row per epoch
    REPORT = "report.json"  # the final scores (training.report)
    PAGE = "report.html"  # the report as a page (training.page)
    CURVES = "curves.png"
    CONFUSION = "confusion.png"
    SETTINGS = "train.toml"  # the command's settings: `train --config RUN/train.toml`
    STAC = "model.stac.json"  # the bundle as a STAC Item of the ML Model extension (geo.mlm)
    TENSORBOARD = "tensorboard"  # a folder, with --log tensorboard
    FILES = (
        MODEL_JSON,
        WEIGHTS,
        LAST,
        CHECKPOINT,
        METRICS,
        REPORT,
        PAGE,
        CURVES,
        CONFUSION,
        SETTINGS,
        STAC,
    )
    PICTURES = (CURVES, CONFUSION)

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def model_json(self) -> Path:
        return self.path / self.MODEL_JSON

    @property
    def weights(self) -> Path:
        return self.path / self.WEIGHTS

    @property
    def last(self) -> Path:
        return self.path / self.LAST

    @property
    def checkpoint(self) -> Path:
        return self.path / self.CHECKPOINT

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def stac(self) -> Path:
        return self.path / self.STAC

    @property
    def report(self) -> Path:
        return self.path / self.REPORT

    @property
    def page(self) -> Path:
        return self.path / self.PAGE

    @property
    def curves(self) -> Path:
        return self.path / self.CURVES

    @property
    def confusion(self) -> Path:
        return self.path / self.CONFUSION

    @property
    def settings(self) -> Path:
        return self.path / self.SETTINGS

    @property
    def tensorboard(self) -> Path:
        return self.path / self.TENSORBOARD

    def existing(self) -> list[str]:
        """The names of :data:`FILES` this folder holds."""
        return [name for name in self.FILES if (self.path / name).exists()]
