"""What to label next (``scratchsat suggest``): the windows where the model is least sure.

The scene is predicted with its uncertainty (into a temporary folder); every window of the
training patch size on a grid with a half-patch step is scored by its mean normalised entropy
over valid pixels; windows that overlap a patch of the run's tiles folder (any split: those
pixels are labelled already) or are less than half valid are left out; then windows are taken
best first, skipping any closer than one patch to a window already taken (a gap of at least a
patch side between footprints), so the suggestions spread over the scene. Windows that look
like cloud — at least half their valid pixels brighter than the training data's 98th
percentile in three quarters of the bands or more (not all: Sentinel-2's cirrus band B10 stays
dark under a thick cloud) — are left out too: nothing to learn land cover from.

The file opens in QGIS as outlines labelled by rank (a style inside the GeoPackage, or a
``.qml`` beside a GeoJSON or FlatGeobuf), so the imagery under each window shows.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from ..device import pick_device
from ..errors import InputError, ShortfallWarning
from ..geo.classmap import class_fields
from ..geo.outputs import atomic_output, check_output, scratch_folder, write_text
from ..geo.raster import open_raster
from ..geo.sources import as_source
from ..geo.vectorize import driver_for, outline_style, store_style
from ..tiles.format import is_tiles_folder, read_array, read_dataset_json
from .engine import load_predictor, predict_scene, scene_indexes
from .options import DEFAULTS, PredictOptions
from .writers import UNCERTAINTY_BANDS, Outputs


@dataclass
class Bright:
    """Which pixels of a band of rows look like cloud: brighter than the training data's 98th
    percentile (``p98`` of the bundle's bands) in at least three quarters of the bands."""

    scene: object  # an open rasterio dataset
    indexes: list[int]  # the scene's bands in the model's order
    p98: np.ndarray  # (C,)

    def __call__(self, window: Window) -> np.ndarray:
        data = self.scene.read(self.indexes, window=window)  # type: ignore[attr-defined]
        bright = (data > self.p98[:, None, None]).sum(axis=0)
        return bright >= math.ceil(0.75 * len(self.p98))


@dataclass(frozen=True)
class Suggestion:
    row: int  # pixel offsets of the window's top-left corner in the scene
    col: int
    score: float  # mean normalised entropy
    margin: float  # mean margin between the two most probable classes
    mix: tuple[float, ...]  # share of each class in the predicted map of the window


def labelled_boxes(meta_data: dict | None, grid_crs, tiles: str | os.PathLike | None):
    """Footprints (map coordinates: left, bottom, right, top) of every patch of the tiles
    folder (``--tiles``, else every folder the run trained on) whose scene is on the same CRS;
    None without a tiles folder."""
    data = meta_data or {}
    trained_on = [f["path"] for f in data.get("folders") or []] or [data.get("tiles")]
    folders = [tiles] if tiles is not None else [f for f in trained_on if f]
    folders = [f for f in folders if is_tiles_folder(f) or f == tiles]
    if tiles is not None and not is_tiles_folder(tiles):
        raise InputError(f"--tiles {tiles} is not a tiles folder (no dataset.json)")
    if not folders:
        return None
    boxes: list[tuple[float, float, float, float]] = []
    for folder in folders:
        boxes += folder_boxes(Path(folder), grid_crs)
    return boxes


def folder_boxes(folder: Path, grid_crs) -> list[tuple[float, float, float, float]]:
    """The footprints of one tiles folder's patches (see :func:`labelled_boxes`)."""
    info = read_dataset_json(folder)
    windows = read_array(folder, "windows")
    size = int(info["patch_size"])
    boxes = []
    for index, col, row in windows.tolist():
        source = info["sources"][index]
        if grid_crs is not None and str(source.get("crs")) != grid_crs.to_string():
            continue
        a, b, c, d, e, f = source["transform"][:6]
        xs = [c + a * x + b * y for x, y in ((col, row), (col + size, row + size))]
        ys = [f + d * x + e * y for x, y in ((col, row), (col + size, row + size))]
        boxes.append((min(xs), min(ys), max(xs), max(ys)))
    return boxes


def rank_windows(
    entropy_path: Path,
    classes_path: Path,
    codes: list[int],
    size: int,
    labelled: list[tuple[float, float, float, float]],
    n: int,
    tally: dict[str, int] | None = None,
    bright: Bright | None = None,
) -> list[Suggestion]:
    """The ``n`` best windows of side ``size`` (see the module's docstring). ``tally``, when
    given, gets how many windows were looked at and why the others were left out; ``bright``
    reads which pixels of a band of rows look like cloud."""
    counts = dict.fromkeys(
        ("windows", "mostly_nodata", "on_labelled", "cloud_like", "too_close"), 0
    )
    step = max(1, size // 2)
    with open_raster(entropy_path) as unsure, open_raster(classes_path) as classes:
        transform, width, height = unsure.transform, unsure.width, unsure.height
        entropy_band = UNCERTAINTY_BANDS.index("entropy") + 1
        margin_band = UNCERTAINTY_BANDS.index("margin") + 1
        candidates = []
        for row in range(0, max(1, height - size + 1), step):
            window = Window(0, row, width, min(size, height - row))
            entropy = unsure.read(entropy_band, window=window)
            margin = unsure.read(margin_band, window=window)
            mapped = classes.read(1, window=window)
            cloud = bright(window) if bright is not None else None
            for col in range(0, max(1, width - size + 1), step):
                counts["windows"] += 1
                e = entropy[:, col : col + size]
                valid = np.isfinite(e)
                if valid.mean() < 0.5 or e.shape != (size, size):
                    counts["mostly_nodata"] += 1
                    continue
                box = _box(transform, row, col, size)
                if any(_overlap(box, other) for other in labelled):
                    counts["on_labelled"] += 1
                    continue
                if cloud is not None and cloud[:, col : col + size][valid].mean() >= 0.5:
                    counts["cloud_like"] += 1
                    continue
                m = mapped[:, col : col + size][valid]
                mix = tuple(float((m == code).mean()) for code in codes)
                score = float(e[valid].mean())
                margin_mean = float(margin[:, col : col + size][valid].mean())
                candidates.append(Suggestion(row, col, score, margin_mean, mix))
    candidates.sort(key=lambda s: (-s.score, s.row, s.col))
    chosen: list[Suggestion] = []
    for candidate in candidates:
        if len(chosen) == n:
            break
        if all(
            max(abs(candidate.row - c.row), abs(candidate.col - c.col)) >= 2 * size for c in chosen
        ):
            chosen.append(candidate)
    counts["too_close"] = len(candidates) - len(chosen) if len(chosen) < n else 0
    if tally is not None:
        tally.update(counts)
    return chosen


def shortfall(n: int, found: int, tally: dict[str, int], size: int) -> str | None:
    """Why fewer windows than ``n`` were found (None when ``n`` were)."""
    if found >= n:
        return None
    return (
        f"only {found} of the {n} windows asked for: of the scene's {tally['windows']} windows "
        f"of {size} px (half a window apart), {tally['mostly_nodata']} are mostly nodata, "
        f"{tally['on_labelled']} overlap a labelled patch, {tally.get('cloud_like', 0)} look "
        f"like cloud and {tally['too_close']} lie within a window of a better one; label "
        "these, train again and ask again"
    )


def _box(transform, row: int, col: int, size: int) -> tuple[float, float, float, float]:
    corners = [transform * (col + dx, row + dy) for dx in (0, size) for dy in (0, size)]
    xs, ys = [x for x, _ in corners], [y for _, y in corners]
    return min(xs), min(ys), max(xs), max(ys)


def _overlap(a, b) -> bool:
    """Whether two boxes share area (touching edges do not count)."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def suggest(
    bundle: str | os.PathLike,
    scene: str | os.PathLike,
    out: str | os.PathLike,
    *,
    n: int = 50,
    tiles: str | os.PathLike | None = None,
    options: PredictOptions = DEFAULTS,
    overwrite: bool = False,
    progress=None,
) -> list[Suggestion]:
    """Write the footprints of the ``n`` windows most worth labelling to a vector file."""
    import fiona
    import shapely.geometry
    from fiona.crs import CRS

    out, source = Path(out), as_source(scene)
    if n < 1:
        raise InputError(f"--n must be at least 1, not {n}")
    fmt, siblings = driver_for(out, None)
    if siblings:
        raise InputError(f"{out}: suggest writes one file; name it .gpkg, .geojson or .fgb")
    check_output(out, overwrite)
    if fmt != "GPKG":
        check_output(out.with_suffix(".qml"), overwrite)
    predictor = load_predictor(bundle, options, pick_device(options.device))
    size = options.patch_size or predictor.meta.patch_size
    if predictor.task != "segmentation":
        raise InputError("suggest needs a segmentation model (a map of per-pixel uncertainty)")
    with open_raster(source) as src:
        crs, transform = src.crs, src.transform
    labelled = labelled_boxes(predictor.meta.data, crs, tiles) or []
    with scratch_folder(out) as work:
        unsure, mapped = work / "uncertainty.tif", work / "classes.tif"
        predict_scene(
            predictor, source, Outputs(mapped, uncertainty=unsure), options, True, progress
        )
        classes = list(predictor.classes)
        codes = [int(c["code"]) for c in classes]
        tally: dict[str, int] = {}
        with open_raster(source) as src:
            bright = cloud_check(source, src, predictor.meta)
            found = rank_windows(unsure, mapped, codes, size, labelled, n, tally, bright)
        why = shortfall(n, len(found), tally, size)
        if why is not None:
            warnings.warn(why, ShortfallWarning, stacklevel=2)
        shares = {name: "float" for name in class_fields("share_", classes)}
        schema = suggestion_schema(shares)
        with atomic_output(out, overwrite) as tmp:
            target = tmp.with_name(tmp.name + out.suffix)  # drivers want their suffix
            layer = {"layer": "suggestions"} if fmt == "GPKG" else {}
            with fiona.open(
                target, "w", driver=fmt, schema=schema, crs=CRS.from_wkt(crs.to_wkt()), **layer
            ) as dst:
                for rank, s in enumerate(found, start=1):
                    left, bottom, right, top = _box(transform, s.row, s.col, size)
                    props = {
                        "rank": rank,
                        "score": s.score,
                        "mean_margin": s.margin,
                        "top_class": str(classes[int(np.argmax(s.mix))]["name"]),
                        **dict(zip(shares, s.mix, strict=True)),
                        "row": s.row,
                        "col": s.col,
                    }
                    box = shapely.geometry.box(left, bottom, right, top)
                    dst.write({"geometry": shapely.geometry.mapping(box), "properties": props})
            if fmt == "GPKG":  # QGIS loads it as the layer's default style
                store_style(target, rank_style(len(found)), "suggestions", "scratchsat suggest")
            os.replace(target, tmp)
    if fmt != "GPKG":  # QGIS looks for it beside
        write_text(out.with_suffix(".qml"), rank_style(len(found)), overwrite=overwrite)
    return found


def suggestion_schema(shares: dict[str, str]) -> dict:
    """The fields of a suggestion: rank, scores, its predicted class mix, its pixel offsets."""
    fields = {"rank": "int", "score": "float", "mean_margin": "float", "top_class": "str"}
    return {"geometry": "Polygon", "properties": {**fields, **shares, "row": "int", "col": "int"}}


def cloud_check(source, src, meta) -> Bright | None:
    """The cloud test for the scene ``src`` (open), or None for bundles from before the
    band statistics kept p98."""
    p98 = [b.get("p98") for b in meta.bands]
    if not all(v is not None for v in p98):
        return None
    indexes = scene_indexes(source, src, meta, warn=False)
    return Bright(src, indexes, np.array(p98, dtype=np.float64))


def rank_style(count: int) -> str:
    """The suggestions' QGIS style: white outlines, each labelled by its rank."""
    ranks = [(str(r), f"rank {r}", "255,255,255", "solid") for r in range(1, count + 1)]
    return outline_style("rank", ranks, label="rank")
