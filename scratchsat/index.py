"""What a tiles folder says about itself: ``dataset.json``, ``index.geojson`` and chips."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
from rasterio.warp import transform_geom
from rasterio.windows import Window

from . import __version__
from .labels import IGNORE_INDEX, ClassInfo, LabelSpec
from .outputs import write_atomically, write_json
from .raster import geotiff_profile
from .stats import BandStats, stats_step
from .windows import SPLITS

if TYPE_CHECKING:
    from .tiling import Scene, TileOptions

FORMAT = "scratchsat-tiles"
FORMAT_VERSION = 1


def crs_member(crs) -> dict | None:
    """The GeoJSON ``crs`` member GDAL and QGIS read (an EPSG URN), where there is a code."""
    epsg = crs.to_epsg() if crs is not None else None
    if epsg is None:
        return None
    return {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{epsg}"}}


def footprint(transform, col: int, row: int, size: int) -> dict:
    """Polygon of a window (closed ring, counter-clockwise)."""
    corners = [
        (col, row + size),
        (col + size, row + size),
        (col + size, row),
        (col, row),
        (col, row + size),
    ]
    return {"type": "Polygon", "coordinates": [[list(transform @ (c, r)) for c, r in corners]]}


def write_index(
    path: Path,
    scenes: Sequence[Scene],
    windows: np.ndarray,
    splits: np.ndarray,
    labels: np.ndarray,
    counts: np.ndarray,
    classes: Sequence[ClassInfo],
    size: int,
) -> None:
    """``index.geojson``: one footprint per patch, in the scenes' CRS where they share one
    (else in WGS 84), with id, split, scene, offsets, majority class and pixels per class."""
    crses = {s.grid.crs.to_wkt() for s in scenes}
    target = scenes[0].grid.crs if len(crses) == 1 else None
    features = []
    for i, (scene_index, col, row) in enumerate(windows.tolist()):
        scene = scenes[scene_index]
        geometry = footprint(scene.grid.transform, col, row, size)
        if target is None:
            geometry = transform_geom(scene.grid.crs, "EPSG:4326", geometry)
        properties = {
            "id": i,
            "split": SPLITS[splits[i]],
            "scene": scene.path.name,
            "col": col,
            "row": row,
            "class": classes[labels[i]].name,
        }
        properties.update({f"px_{c.name}": int(counts[i, c.id]) for c in classes})
        features.append(
            {"type": "Feature", "id": i, "geometry": geometry, "properties": properties}
        )
    head = {"type": "FeatureCollection", "name": "patches"}
    member = crs_member(target) if target is not None else None
    if member:
        head["crs"] = member
    # One feature per line, as GDAL writes GeoJSON: readable, and encoded by json's C encoder
    # (an indented dump of thousands of features costs more than cutting the patches).
    lines = ",\n".join(json.dumps(f, allow_nan=False) for f in features)
    text = json.dumps(head)[:-1] + ', "features": [\n' + lines + "\n]}\n"
    write_atomically(path, lambda tmp: tmp.write_text(text))


def write_chips(
    folder: Path, scenes: Sequence[Scene], windows: np.ndarray, size: int, task: str
) -> None:
    """Each patch as a georeferenced GeoTIFF (and its label mask, for segmentation)."""
    chips = folder / "chips"
    chips.mkdir()
    images = np.load(folder / "images.npy", mmap_mode="r")
    masks = np.load(folder / "masks.npy", mmap_mode="r") if task == "segmentation" else None
    for i, (scene_index, col, row) in enumerate(windows.tolist()):
        scene = scenes[scene_index]
        transform = rasterio.windows.transform(Window(col, row, size, size), scene.grid.transform)
        common = {"width": size, "height": size, "crs": scene.grid.crs, "transform": transform}
        profile = geotiff_profile(
            count=len(scene.bands), dtype=scene.dtype, nodata=scene.nodata, **common
        )
        with rasterio.open(chips / f"{i:06d}.tif", "w", **profile) as dst:
            dst.write(images[i])
            dst.descriptions = scene.bands
        if masks is not None:
            profile = geotiff_profile(count=1, dtype="uint8", nodata=IGNORE_INDEX, **common)
            with rasterio.open(chips / f"{i:06d}_labels.tif", "w", **profile) as dst:
                dst.write(masks[i], 1)


def write_dataset_json(
    folder: Path,
    scenes: Sequence[Scene],
    spec: LabelSpec | None,
    classes: Sequence[ClassInfo],
    options: TileOptions,
    stats: BandStats,
    skipped: Counter,
    windows_seen: int,
    splits: np.ndarray,
    labels: np.ndarray,
    counts: np.ndarray,
) -> None:
    """``dataset.json``: the band contract, statistics, classes, splits and provenance."""
    summary = stats.summary()
    first = scenes[0]
    bands = [
        {
            "name": name,
            "index": index,
            "mean": summary["mean"][k],
            "std": summary["std"][k],
            "p2": summary["p2"][k],
            "p98": summary["p98"][k],
        }
        for k, (name, index) in enumerate(zip(first.bands, first.band_indexes, strict=True))
    ]
    class_rows = [
        {
            **asdict(c),
            "pixels": int(counts[:, c.id].sum()),
            "patches": int((labels == c.id).sum()),
            "pixels_by_split": {
                name: int(counts[splits == k, c.id].sum()) for k, name in enumerate(SPLITS)
            },
        }
        for c in classes
    ]
    nodata = first.nodata
    data = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "scratchsat_version": __version__,
        "task": options.task,
        "patch_size": options.patch_size,
        "stride": options.stride or options.patch_size,
        "block_size": options.block_size or 8 * options.patch_size,
        "min_valid": options.min_valid,
        "min_labeled": options.min_labeled,
        "seed": options.seed,
        "val_fraction": options.val,
        "test_fraction": options.test,
        "dtype": first.dtype,
        "nodata": None if nodata is None or np.isnan(nodata) else nodata,
        "nodata_is_nan": nodata is not None and bool(np.isnan(nodata)),
        "ignore_index": IGNORE_INDEX,
        "bands": bands,
        # "descriptions": predict matches a scene's bands by these names; "numbers": B1 … Bn
        # stand for positions, and predict takes a scene's bands in file order.
        "band_names": "descriptions" if first.names_described else "numbers",
        "statistics": "over the valid pixels of every kept patch (all splits) on a lattice of "
        "every statistics_step-th row and column; percentiles "
        + ("exact on that lattice" if stats.hist is not None else "from a sample"),
        "statistics_step": stats_step(options.patch_size),
        "classes": class_rows,
        "patches": int(len(splits)),
        "splits": {name: int((splits == k).sum()) for k, name in enumerate(SPLITS)},
        "windows": windows_seen,
        "skipped": {k: int(v) for k, v in sorted(skipped.items())},
        "arrays": sorted(p.stem for p in folder.glob("*.npy")),
        "sources": [
            {
                "path": str(s.path),
                "crs": s.grid.crs.to_string() if s.grid.crs else None,
                "transform": list(s.grid.transform)[:6],
                "width": s.grid.width,
                "height": s.grid.height,
            }
            for s in scenes
        ],
        "labels": None
        if spec is None
        else {"path": str(spec.path), "field": spec.field, "background": spec.background},
    }
    write_json(folder / "dataset.json", data)


def read_dataset_json(folder: str | os.PathLike) -> dict:
    return json.loads((Path(folder) / "dataset.json").read_text())
