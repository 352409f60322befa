"""``predict --stac``: a STAC Item beside each class map, for catalogues.

STAC 1.1.0 with the projection (v2.0.0), raster (v1.1.0) and classification (v2.0.0)
extensions: the map's grid and CRS, its band (dtype, nodata, resolution), its classes (code,
machine name, title, colour) and, as ``scratchsat:*`` properties, where it came from — the
model bundle, its band contract and training data, the scene. ``datetime`` is the scene's
acquisition time where its metadata has one, else the time of prediction (said in
``scratchsat:datetime_source``). Written from the finished files, after they are in place."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import rasterio
from rasterio.warp import transform_geom

from .._version import __version__
from ..bundle import BundleMeta
from ..geo.classmap import field_name, read_classes_tag
from ..geo.raster import open_raster
from ..geo.sources import Source

STAC_VERSION = "1.1.0"
EXTENSIONS = {
    "projection": "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "classification": "https://stac-extensions.github.io/classification/v2.0.0/schema.json",
}
GEOTIFF = "image/tiff; application=geotiff"
ACQUISITION_TAGS = (  # scene metadata that holds the acquisition time, most specific first
    "DATATAKE_1_DATATAKE_SENSING_START",
    "PRODUCT_START_TIME",
    "SENSING_TIME",
    "ACQUISITION_DATE",
    "DATE_ACQUIRED",
    "TIFFTAG_DATETIME",
)


def stac_path(classes: Path) -> Path:
    """Where the item of a class map goes: ``PRED.tif`` → ``PRED.stac.json``."""
    return classes.with_suffix(".stac.json")


def acquisition_time(scene: Source) -> tuple[str | None, str]:
    """The scene's acquisition time (ISO 8601, UTC) from its metadata, and which tag said so."""
    with open_raster(scene) as src:
        tags = src.tags()
    for tag in ACQUISITION_TAGS:
        text = tags.get(tag)
        if not text:
            continue
        text = text.strip().replace("Z", "+00:00")
        for parse in (
            dt.datetime.fromisoformat,
            lambda t: dt.datetime.strptime(t, "%Y:%m:%d %H:%M:%S"),  # TIFF's own format
        ):
            try:
                when = parse(text)
            except ValueError:
                continue
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.timezone.utc)
            return iso(when), f"scene metadata {tag}"
    return None, "prediction time (the scene's metadata has no acquisition time)"


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def asset(path: Path, item_path: Path, title: str, roles: list[str], cog: bool) -> dict:
    """An asset pointing at ``path``: relative to the item when beside it (the pair moves
    together), else absolute."""
    try:
        href = "./" + path.resolve().relative_to(item_path.resolve().parent).as_posix()
    except ValueError:
        href = path.resolve().as_uri()
    kind = GEOTIFF + ("; profile=cloud-optimized" if cog else "")
    return {"href": href, "type": kind, "title": title, "roles": roles}


def stac_item(
    classes_path: Path,
    scene: Source,
    meta: BundleMeta,
    bundle: Path | None,
    *,
    probabilities: Path | None = None,
    uncertainty: Path | None = None,
    cog: bool = False,
    now: dt.datetime | None = None,
) -> dict:
    """The STAC Item (a dict) of a written class map."""
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
    band = {"data_type": dtype, "nodata": nodata, "spatial_resolution": resolution}
    assets = class_assets(classes_path, item_path, {**band, "sampling": "area"}, classes, cog)
    if probabilities is not None:
        assets["probabilities"] = probability_asset(probabilities, item_path, resolution, cog)
    if uncertainty is not None:
        assets["uncertainty"] = asset(
            uncertainty, item_path, "margin, entropy, top probability", ["data"], cog
        )
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
        "links": [],
        "assets": assets,
    }


def wgs84_footprint(crs, bounds) -> dict:
    """The map's bounds as a GeoJSON polygon in longitude and latitude (as given without a
    CRS)."""
    west, south, east, north = bounds
    ring = [(west, south), (east, south), (east, north), (west, north), (west, south)]
    footprint = {"type": "Polygon", "coordinates": [ring]}
    if crs is not None:
        footprint = transform_geom(crs, "EPSG:4326", footprint, precision=7)
    return json.loads(json.dumps(footprint))  # tuples → lists


def class_assets(classes_path: Path, item_path: Path, band: dict, classes, cog: bool) -> dict:
    """The class map (its band and its classes, nodata included) and its QGIS style."""
    class_rows = [
        {
            "value": int(c["code"]),
            "name": field_name(c["name"]),
            "title": str(c["name"]),
            "color_hint": str(c["colour"]).lstrip("#").upper(),
        }
        for c in classes
    ]
    class_rows.append({"value": int(band["nodata"]), "name": "nodata", "nodata": True})
    return {
        "classes": {
            **asset(classes_path, item_path, "predicted class", ["data"], cog),
            "raster:bands": [band],
            "classification:classes": class_rows,
        },
        "style": {
            "href": "./" + classes_path.with_suffix(".qml").name,
            "type": "text/xml",
            "title": "QGIS style (paletted, class names)",
            "roles": ["metadata"],
        },
    }


def probability_asset(path: Path, item_path: Path, resolution: float, cog: bool) -> dict:
    """The probabilities raster: a band per class, with its scale."""
    with rasterio.open(path) as src:
        bands = [
            {
                "data_type": src.dtypes[0],
                "nodata": "nan" if src.nodata != src.nodata else src.nodata,
                "scale": src.scales[0],
                "offset": 0.0,
                "spatial_resolution": resolution,
                "sampling": "area",
            }
            for _ in range(src.count)
        ]
    title = "class probabilities, a band per class"
    return {**asset(path, item_path, title, ["data"], cog), "raster:bands": bands}


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
