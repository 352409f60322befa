"""``predict --stac``: a STAC Item beside each class map, for catalogues.

STAC 1.1.0 with the projection (v2.0.0), raster (v1.1.0) and classification (v2.0.0)
extensions: the map's grid and CRS, its band (dtype, nodata, resolution), its classes (code,
machine name, title, colour) and, as ``scratchsat:*`` properties, where it came from — the
model bundle, its band contract and training data, the scene. ``datetime`` is the scene's
acquisition time where its metadata has one, else the time of prediction (said in
``scratchsat:datetime_source``). Written from the finished files, after they are in place."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import rasterio

from .._version import __version__
from ..bundle import BundleMeta
from ..geo.acquisition import acquired, iso
from ..geo.classmap import read_classes_tag, style_path
from ..geo.raster import open_raster, read_decimated
from ..geo.sources import Source
from ..geo.stac import (
    EXTENSIONS,
    STAC_VERSION,
    asset,
    classification_classes,
    wgs84_footprint,
)


def stac_path(classes: Path) -> Path:
    """Where the item of a class map goes: ``PRED.tif`` → ``PRED.stac.json``."""
    return classes.with_suffix(".stac.json")


def acquisition_time(scene: Source) -> tuple[str | None, str]:
    """The scene's acquisition time (ISO 8601, UTC) from its metadata or its file name
    (:func:`geo.acquisition.acquired`), and what said so."""
    with open_raster(scene) as src:
        tags = src.tags()
    when, source = acquired(scene, tags)
    if when is None:
        return None, "prediction time (the scene's metadata and name hold no acquisition time)"
    return iso(when), source


def stac_item(
    classes_path: Path,
    scene: Source,
    meta: BundleMeta,
    bundle: Path | None,
    *,
    probabilities: Path | None = None,
    uncertainty: Path | None = None,
    vector: Path | None = None,
    cog: bool = False,
    now: dt.datetime | None = None,
) -> dict:
    """The STAC Item (a dict) of a written class map: every file written beside it is an
    asset (rasters with their bands' names and statistics, styles, polygons)."""
    item_path = stac_path(classes_path)
    with rasterio.open(classes_path) as src:
        crs, transform, bounds = src.crs, src.transform, src.bounds
        width, height, dtype, nodata = src.width, src.height, src.dtypes[0], src.nodata
        classes = read_classes_tag(src.tags()) or list(meta.classes)
    now = now or dt.datetime.now(dt.timezone.utc)
    acquired, source = acquisition_time(scene)
    footprint = wgs84_footprint(crs, bounds)
    points = [p for ring_ in footprint["coordinates"] for p in ring_]
    lons, lats = [p[0] for p in points], [p[1] for p in points]
    epsg = crs.to_epsg() if crs is not None else None
    resolution = abs(transform.a)
    band = {"name": "predicted class", "data_type": dtype, "nodata": nodata}
    band |= {"spatial_resolution": resolution, "sampling": "area"}
    band["statistics"] = band_statistics(classes_path)[0]
    assets = class_assets(classes_path, item_path, band, classes, cog)
    names = [str(c["name"]) for c in classes]
    for key, path, title in (
        ("probabilities", probabilities, "class probabilities, a band per class"),
        ("uncertainty", uncertainty, "margin, normalised entropy, top probability"),
    ):
        if path is not None:
            assets[key] = raster_asset(path, item_path, title, resolution, cog, names)
            if style_path(path).exists():
                assets[f"{key}_style"] = style_asset(style_path(path), "QGIS style")
    if vector is not None:
        assets["vector"] = vector_asset(vector, item_path)
        if vector.suffix.lower() != ".gpkg" and vector.with_suffix(".qml").exists():
            assets["vector_style"] = style_asset(vector.with_suffix(".qml"), "QGIS style")
    properties = {
        "datetime": acquired or iso(now),
        "created": iso(now),
        "title": f"{classes_path.stem}: classes predicted by scratchsat",
        "proj:code": f"EPSG:{epsg}" if epsg else None,
        "proj:shape": [height, width],
        "proj:transform": list(transform)[:6],
        "proj:bbox": list(bounds),
        "scratchsat:datetime_source": source,
        "scratchsat:scene": str(scene),
        "scratchsat:model": model_properties(meta, bundle),
        "scratchsat:version": __version__,
    }
    if not epsg and crs is not None:
        properties["proj:wkt2"] = crs.to_wkt()
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": list(EXTENSIONS.values()),
        "id": classes_path.stem,
        "geometry": footprint,
        "bbox": [min(lons), min(lats), max(lons), max(lats)],
        "properties": properties,
        "links": [{"rel": "self", "href": str(item_path.resolve()), "type": "application/json"}],
        "assets": assets,
    }


def class_assets(classes_path: Path, item_path: Path, band: dict, classes, cog: bool) -> dict:
    """The class map (its band and its classes, nodata included) and its QGIS style."""
    class_rows = classification_classes(classes)
    class_rows.append({"value": int(band["nodata"]), "name": "nodata", "nodata": True})
    return {
        "classes": {
            **asset(classes_path, item_path, "predicted class", ["data"], cog),
            "bands": [{"name": band["name"]}],
            "raster:bands": [band],
            "classification:classes": class_rows,
        },
        "style": style_asset(
            classes_path.with_suffix(".qml"), "QGIS style (paletted, class names)"
        ),
    }


def style_asset(path: Path, title: str) -> dict:
    """A QGIS style beside the item (QGIS loads it with the layer of the same name)."""
    return {"href": "./" + path.name, "type": "text/xml", "title": title, "roles": ["metadata"]}


VECTOR_TYPES = {
    ".gpkg": "application/geopackage+sqlite3",
    ".geojson": "application/geo+json",
    ".json": "application/geo+json",
    ".fgb": "application/vnd.flatgeobuf",
    ".shp": "application/x-shapefile",
}


def vector_asset(path: Path, item_path: Path) -> dict:
    """The map's polygons (``predict --vector``)."""
    found = asset(path, item_path, "class polygons", ["data"], False)
    return {**found, "type": VECTOR_TYPES.get(path.suffix.lower(), "application/octet-stream")}


STATISTICS_SIDE = 1024  # statistics from a read at most this many pixels a side


def band_statistics(path: Path) -> list[dict]:
    """Each band's minimum, maximum, mean, standard deviation and valid percentage, from a
    read decimated to at most ``STATISTICS_SIDE`` pixels a side (approximate, as GDAL's)."""
    data = read_decimated(path, side=STATISTICS_SIDE)
    out = []
    for band in data:
        values = band.compressed().astype(np.float64)
        values = values[np.isfinite(values)]
        if not len(values):
            out.append({"valid_percent": 0.0})
            continue
        out.append(
            {
                "minimum": float(values.min()),
                "maximum": float(values.max()),
                "mean": float(values.mean()),
                "stddev": float(values.std()),
                "valid_percent": round(100 * len(values) / band.size, 2),
            }
        )
    return out


def raster_asset(
    path: Path, item_path: Path, title: str, resolution: float, cog: bool, classes: list[str]
) -> dict:
    """The probabilities (a band per class) or uncertainty raster: its bands' names, types,
    scales and statistics."""
    statistics = band_statistics(path)
    with rasterio.open(path) as src:
        bands = [
            {
                "name": src.descriptions[i]
                or (classes[i] if i < len(classes) else f"band {i + 1}"),
                "data_type": src.dtypes[i],
                "nodata": "nan" if src.nodata != src.nodata else src.nodata,
                "scale": src.scales[i],
                "offset": src.offsets[i],
                "spatial_resolution": resolution,
                "sampling": "area",
                "statistics": statistics[i],
            }
            for i in range(src.count)
        ]
    named = [{"name": b["name"]} for b in bands]  # STAC 1.1's own bands, by name
    return {**asset(path, item_path, title, ["data"], cog), "bands": named, "raster:bands": bands}


def model_properties(meta: BundleMeta, bundle: Path | None) -> dict:
    """``scratchsat:model``: which model made the map, on what data."""
    data = meta.data or {}
    return {
        "bundle": str(bundle) if bundle else None,
        "architecture": (meta.model or {}).get("name"),
        "task": meta.task,
        "patch_size": meta.patch_size,
        "bands": [b["name"] for b in meta.bands],
        "dtype": meta.dtype,
        "nodata": meta.nodata,
        "epoch": meta.epoch,
        "seed": (meta.training or {}).get("seed"),
        "training_data": data.get("folders") or [data.get("tiles")],
        "training_data_hash": data.get("hash"),
        "scratchsat_version": meta.scratchsat_version,
    }
