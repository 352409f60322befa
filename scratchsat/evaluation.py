"""Compare a class map with labels (``scratchsat evaluate``).

Labels are brought onto the prediction's grid as ``tile`` does (label rasters by nearest
neighbour, vector labels rasterized). Pixels that are nodata in the prediction or unlabelled
are left out. Prediction values are class codes; they are matched with the labels' classes by
code, or by name when the labels name their classes (a text field of vector labels) and the
prediction carries class names (its ``CLASSES`` tag, written by ``predict``).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from .errors import InputError
from .geo.classmap import read_classes_tag
from .geo.labels import IGNORE_INDEX, ClassInfo, LabelSpec, label_classes, read_ids
from .geo.raster import Grid, open_raster
from .geo.sources import Source, as_source
from .geo.windows import SPLITS
from .metrics import scores
from .tiles.format import read_dataset_json

ROWS = 512  # rows read at a time


def prediction_grid(path: Source) -> tuple[Grid, float | None, list[dict] | None]:
    with open_raster(path) as src:
        if src.count != 1 or np.dtype(src.dtypes[0]).kind not in "iu":
            raise InputError(
                f"{path} has {src.count} band(s) of {src.dtypes[0]}; pass a class map: one band "
                "of integer class codes, as `scratchsat predict` writes"
            )
        grid = Grid(src.crs, src.transform, src.width, src.height)
        return grid, src.nodata, read_classes_tag(src.tags())


def split_mask(tiles: Path, split: str, grid: Grid) -> np.ndarray:
    """(H, W) bool: pixels inside the patches of ``split`` of a tiles folder on ``grid``."""
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    info = read_dataset_json(tiles)
    scenes = [
        i
        for i, s in enumerate(info["sources"])
        if (s["width"], s["height"]) == (grid.width, grid.height)
        and np.allclose(s["transform"], list(grid.transform)[:6])
    ]
    if not scenes:
        raise InputError(
            f"no scene of {tiles} has the prediction's grid ({grid.width} × {grid.height}, "
            f"{tuple(grid.transform)[:6]}); predict the scene that was tiled"
        )
    windows = np.load(tiles / "windows.npy")
    splits = np.load(tiles / "splits.npy")
    size = int(info["patch_size"])
    mask = np.zeros((grid.height, grid.width), dtype=bool)
    for scene, col, row in windows[(splits == SPLITS.index(split))]:
        if scene in scenes:
            mask[row : row + size, col : col + size] = True
    return mask


def match(truth: list[ClassInfo], predicted: list[dict] | None) -> tuple[list[dict], dict]:
    """The class list for the confusion matrix (label classes first) and a lookup from
    prediction codes to its rows; by name when the labels have real names, else by code."""
    classes = [{"code": c.code, "name": c.name} for c in truth]
    by_name = predicted is not None and any(c.name != str(c.code) for c in truth)
    lookup: dict[int, int] = {}
    for p in predicted or []:
        key = "name" if by_name else "code"
        found = [i for i, c in enumerate(classes) if c[key] == p[key]]
        if not found:
            classes.append({"code": p["code"], "name": p["name"]})
            found = [len(classes) - 1]
        lookup[int(p["code"])] = found[0]
    if not by_name:
        lookup.update({c.code: i for i, c in enumerate(truth)})
    return classes, lookup


def evaluate(
    prediction: str | os.PathLike,
    labels: str | os.PathLike,
    *,
    label_field: str | None = None,
    background: str | None = None,
    tiles: str | os.PathLike | None = None,
    split: str | None = None,
    progress: Callable[..., None] | None = None,
) -> dict:
    """Scores of a class map against labels: overall accuracy, mean IoU, per-class IoU, F1,
    precision, recall and support, and the confusion matrix (rows = labels)."""
    prediction = as_source(prediction)
    if (tiles is None) != (split is None):
        raise InputError("--tiles and --split go together: the split's patches of that folder")
    grid, nodata, predicted = prediction_grid(prediction)
    spec = LabelSpec(as_source(labels), label_field, background)
    truth = label_classes(spec, [grid])
    region = split_mask(Path(tiles), split, grid) if tiles is not None and split else None
    pairs: Counter = Counter()  # (label id, prediction code) → pixels
    with open_raster(prediction) as src:
        for top in range(0, grid.height, ROWS):
            window = Window(0, top, grid.width, min(ROWS, grid.height - top))
            codes = src.read(1, window=window)
            ids = read_ids(spec, grid, window, truth)
            keep = ids != IGNORE_INDEX
            if nodata is not None:
                keep &= codes != nodata
            if region is not None:
                keep &= region[top : top + window.height]
            stacked = np.stack([ids[keep].astype(np.int64), codes[keep].astype(np.int64)])
            values, counts = np.unique(stacked, axis=1, return_counts=True)
            pairs.update(dict(zip(map(tuple, values.T.tolist()), counts.tolist(), strict=True)))
            if progress is not None:
                progress(top + window.height, grid.height)
    classes, lookup = match(truth, predicted)
    for code in sorted({code for _, code in pairs} - set(lookup)):
        classes.append({"code": code, "name": str(code)})
        lookup[code] = len(classes) - 1
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for (label, code), count in pairs.items():
        confusion[label, lookup[code]] += count
    result = scores(confusion, [c["name"] for c in classes])
    for entry, c in zip(result["classes"], classes, strict=True):
        entry["code"] = c["code"]
    return {
        "prediction": str(prediction),
        "labels": str(labels),
        "split": split,
        "pixels": int(confusion.sum()),
        **result,
    }
