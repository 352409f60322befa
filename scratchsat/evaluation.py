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
from .tiles.format import read_array, read_dataset_json

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
    windows = read_array(tiles, "windows")
    splits = read_array(tiles, "splits")
    size = int(info["patch_size"])
    mask = np.zeros((grid.height, grid.width), dtype=bool)
    for scene, col, row in windows[(splits == SPLITS.index(split))]:
        if scene in scenes:
            mask[row : row + size, col : col + size] = True
    if not mask.any():
        counts = ", ".join(f"{name} {n}" for name, n in info["splits"].items())
        raise InputError(
            f"the {split} split of {tiles} holds no patches of this scene ({counts}), so there "
            "is nothing to score; tile again with a smaller --block-size (splits are drawn "
            "by blocks, and too few blocks leave a split empty), or evaluate another split"
        )
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
    mapped: Counter = Counter()  # prediction code → pixels of the whole map
    with open_raster(prediction) as src:
        for top in range(0, grid.height, ROWS):
            window = Window(0, top, grid.width, min(ROWS, grid.height - top))
            codes = src.read(1, window=window)
            values, counts = np.unique(codes, return_counts=True)
            mapped.update({int(v): int(n) for v, n in zip(values, counts, strict=True)})
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
    if nodata is not None:
        mapped.pop(int(nodata), None)
    classes, lookup = match(truth, predicted)
    for code in sorted(({code for _, code in pairs} | set(mapped)) - set(lookup)):
        classes.append({"code": code, "name": str(code)})
        lookup[code] = len(classes) - 1
    confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for (label, code), count in pairs.items():
        confusion[label, lookup[code]] += count
    if not confusion.sum():
        where = f" inside the {split} split of {tiles}" if region is not None else ""
        raise InputError(
            f"{prediction} against {labels}: no labelled pixel to score{where} (the map is "
            "nodata wherever the labels name a class, or the labels name none there); pass "
            "the prediction of the labelled scene, and check --label-field and --background"
        )
    result = scores(confusion, [c["name"] for c in classes])
    for entry, c in zip(result["classes"], classes, strict=True):
        entry["code"] = c["code"]
    map_pixels = np.zeros(len(classes), dtype=np.int64)
    for code, count in mapped.items():
        map_pixels[lookup[code]] += count
    return {
        "prediction": str(prediction),
        "labels": str(labels),
        "split": split,
        "pixels": int(confusion.sum()),
        **result,
        "area": area_report(confusion.T, map_pixels, classes, grid),
    }


Z95 = 1.959964  # two-sided 95 % normal quantile


def stratified_estimates(sample: np.ndarray, map_pixels: np.ndarray) -> dict[str, np.ndarray]:
    """Olofsson et al. (2014) with the map classes as strata.

    ``sample[i, j]``: sample units mapped as class i whose reference class is j;
    ``map_pixels[i]``: the map's pixels of class i (the stratum sizes). Returns area
    proportions per reference class and their standard errors (eq. 9–10), user's and
    producer's accuracies and theirs (eq. 2–4, 5, 7), overall accuracy and its (eq. 1, 6).
    Standard errors are NaN where a stratum has fewer than two sample units.
    """
    n = sample.astype(np.float64)
    n_i = n.sum(1)  # sample units per stratum (map class)
    weights = map_pixels / map_pixels.sum()  # W_i
    sampled = n_i > 0
    share = np.divide(n, n_i[:, None], out=np.zeros_like(n), where=sampled[:, None])  # n_ij/n_i
    p = weights[:, None] * share  # p̂_ij
    area = p.sum(0)  # p̂_·j
    with np.errstate(divide="ignore", invalid="ignore"):
        dof = np.where(n_i > 1, n_i - 1, np.nan)
        area_se = np.sqrt(np.nansum(weights[:, None] ** 2 * share * (1 - share) / dof[:, None], 0))
        if ((n_i <= 1) & (weights > 0)).any():  # a stratum's variance cannot be estimated
            area_se[:] = np.nan
        users = np.where(sampled, np.diag(share), np.nan)
        users_se = np.sqrt(users * (1 - users) / dof)
        producers = np.diag(p) / area
        totals = map_pixels.astype(np.float64)  # N_i·
        reference = (totals[:, None] * share).sum(0)  # N̂_·j
        others = totals[:, None] ** 2 * share * (1 - share) / dof[:, None]  # for i ≠ j
        np.fill_diagonal(others, 0)
        variance = (
            totals**2 * (1 - producers) ** 2 * users * (1 - users) / dof
            + producers**2 * np.nansum(others, 0)
        ) / reference**2
        producers_se = np.sqrt(variance)
        overall = np.diag(p).sum()
        overall_se = np.sqrt(np.nansum(weights**2 * users * (1 - users) / dof))
    return {
        "area": area,
        "area_se": area_se,
        "users": users,
        "users_se": users_se,
        "producers": producers,
        "producers_se": producers_se,
        "overall": np.float64(overall),
        "overall_se": np.float64(overall_se),
    }


def area_report(sample: np.ndarray, map_pixels: np.ndarray, classes: list[dict], grid: Grid):
    """Per class: the map's area, the error-adjusted area with a 95 % interval, user's and
    producer's accuracies with theirs (in hectares where the CRS is projected)."""
    if map_pixels.sum() == 0:
        return None
    est = stratified_estimates(sample, map_pixels)
    pixel_area = abs(grid.transform.determinant)
    projected = grid.crs is not None and grid.crs.is_projected
    to_ha = (grid.crs.linear_units_factor[1] ** 2 / 10_000) if projected else None
    unit_area = pixel_area * to_ha if to_ha else pixel_area
    total = map_pixels.sum() * unit_area

    def number(value) -> float | None:
        return None if not np.isfinite(value) else float(value)

    def interval(se) -> float | None:
        return number(Z95 * se)

    rows = []
    for i, c in enumerate(classes):
        rows.append(
            {
                "code": c["code"],
                "name": c["name"],
                "mapped": float(map_pixels[i] * unit_area),
                "estimated": number(est["area"][i] * total),
                "estimated_ci95": number(Z95 * est["area_se"][i] * total),
                "users_accuracy": number(est["users"][i]),
                "users_ci95": interval(est["users_se"][i]),
                "producers_accuracy": number(est["producers"][i]),
                "producers_ci95": interval(est["producers_se"][i]),
                "sample": int(sample[i].sum()),
            }
        )
    unsampled = [c["name"] for i, c in enumerate(classes) if map_pixels[i] and not sample[i].sum()]
    return {
        "units": "ha" if to_ha else "CRS units²",
        "method": "stratified estimator of Olofsson et al. (2014), strata = map classes, "
        "sample = the labelled pixels",
        "overall_accuracy": number(est["overall"]),
        "overall_ci95": interval(est["overall_se"]),
        "classes": rows,
        "unsampled_map_classes": unsampled,
    }


def evaluation_page(result: dict) -> str:
    """``evaluate --html``: one self-contained page of :func:`evaluate`'s result — scores,
    per-class table, the confusion matrix (a picture and its counts) and area estimates."""
    from . import htmlpage as h
    from .training.report import confusion_png

    where = f", {result['split']} split" if result["split"] else ""
    names = [c["name"] for c in result["classes"]]
    summary = h.pairs(
        [
            ("class map", result["prediction"]),
            ("labels", result["labels"]),
            ("pixels scored", f"{result['pixels']:,}{where}"),
            (PIXEL_ACCURACY, result["overall_accuracy"]),
            ("mean IoU", result["mean_iou"]),
            ("macro F1", result["macro_f1"]),
        ]
    )
    classes = h.table(
        ["code", "class", "IoU", "F1", "precision", "recall", "support"],
        [
            [c["code"], c["name"], c["iou"], c["f1"], c["precision"], c["recall"], c["support"]]
            for c in result["classes"]
        ],
    )
    confusion = np.array(result["confusion"])
    counts = h.table(
        ["labels ↓ / map →", *names],
        [[name, *map(int, row)] for name, row in zip(names, confusion, strict=True)],
    )
    sections = [
        h.section("Scores", summary, classes),
        h.section(
            "Confusion matrix",
            h.image(confusion_png(confusion, names, "rows: labels, columns: map"), "confusion"),
            counts,
        ),
    ]
    if result.get("area"):
        sections.append(area_section(result["area"]))
    return h.page(f"scratchsat evaluate: {Path(result['prediction']).name}", sections)


def check_score_outputs(overwrite: bool, *paths: Path | None) -> None:
    """Before scoring: ``evaluate --json/--html`` targets that could not be written."""
    from .geo.outputs import check_output

    for path in paths:
        if path is not None:
            check_output(path, overwrite)


def write_scores(
    result: dict, json_out: Path | None, html: Path | None, overwrite: bool
) -> list[Path]:
    """``evaluate --json`` (the scores) and ``--html`` (:func:`evaluation_page`); the paths."""
    from .geo.outputs import write_json, write_text

    written = []
    if json_out is not None:
        write_json(json_out, result, overwrite=overwrite, lock=True)
        written.append(json_out)
    if html is not None:
        write_text(html, evaluation_page(result), overwrite=overwrite)
        written.append(html)
    return written


PIXEL_ACCURACY = "overall accuracy (of the labelled pixels)"
AREA_ACCURACY = "overall accuracy, area-weighted (map classes weighted by their mapped area)"
AREA_CAVEAT = (
    "The ± are 95 % intervals, valid for a probability sample only: labels drawn at random "
    "(for instance stratified by map class). Labels drawn where someone chose to map, such as "
    "OpenStreetMap polygons or a tiles folder's test split, are not one: read the intervals "
    "and the adjusted areas as indicative."
)
AREA_COLUMNS = ["class", "mapped", "estimated", "± 95 %", "user's", "±", "producer's", "±"]
AREA_KEYS = ["name", "mapped", "estimated", "estimated_ci95", "users_accuracy", "users_ci95"]
AREA_KEYS += ["producers_accuracy", "producers_ci95", "sample"]


def area_section(area: dict) -> str:
    """The page's area-adjusted estimates: per class, and the overall accuracy."""
    from . import htmlpage as h

    rows = [[c[key] for key in AREA_KEYS] for c in area["classes"]]
    return h.section(
        f"Area-adjusted estimates ({area['units']})",
        h.paragraph(area["method"]),
        h.paragraph(AREA_CAVEAT),
        h.table([*AREA_COLUMNS, "sample"], rows),
        h.pairs([(AREA_ACCURACY, area["overall_accuracy"]), ("± 95 %", area["overall_ci95"])]),
    )
