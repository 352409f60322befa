"""What a tiles folder says about itself: ``dataset.json``, ``index.geojson`` and chips."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
from rasterio.warp import transform_geom
from rasterio.windows import Window

from ..geo.classmap import class_fields
from ..geo.labels import IGNORE_INDEX, ClassInfo
from ..geo.outputs import write_atomically
from ..geo.raster import geotiff_profile
from ..geo.vectorize import outline_style
from ..geo.windows import SPLITS

if TYPE_CHECKING:
    from .options import Scene


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
    """``index.geojson`` (and ``index.qml``, its QGIS style: outlines coloured by split, the
    imagery showing through): one footprint per patch, in the scenes' CRS where they share one
    (else in WGS 84), with id, split, scene, offsets, majority class and pixels per class."""
    crses = {s.grid.crs.to_wkt() for s in scenes}
    target = scenes[0].grid.crs if len(crses) == 1 else None
    fields = class_fields("px_", classes)  # no spaces: QGIS expressions need no quoting

    def features():
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
            properties.update(
                {f: int(counts[i, c.id]) for f, c in zip(fields, classes, strict=True)}
            )
            yield {"type": "Feature", "id": i, "geometry": geometry, "properties": properties}

    head: dict[str, object] = {"type": "FeatureCollection", "name": "patches"}
    member = crs_member(target) if target is not None else None
    if member:
        head["crs"] = member

    def write(tmp: Path) -> None:
        # One feature per line, as GDAL writes GeoJSON: readable, and encoded by json's C
        # encoder (an indented dump of thousands of features costs more than cutting the
        # patches); streamed, so memory does not grow with the number of patches.
        with open(tmp, "w") as f:
            f.write(json.dumps(head)[:-1] + ', "features": [\n')
            for i, feature in enumerate(features()):
                f.write((",\n" if i else "") + json.dumps(feature, allow_nan=False))
            f.write("\n]}\n")

    write_atomically(path, write)
    write_atomically(path.with_suffix(".qml"), lambda tmp: tmp.write_text(SPLIT_STYLE))


SPLIT_COLOURS = {"train": "255,255,255", "val": "255,170,0", "test": "0,200,255"}
SPLIT_STYLE = outline_style(  # index.qml: QGIS draws the patches as outlines, by split
    "split", [(name, name, rgb, "solid") for name, rgb in SPLIT_COLOURS.items()]
)


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
