"""STAC JSON shared by the items scratchsat writes (a class map's, ``predict --stac``; a
model's, ``geo.mlm``): the versions and extensions, an asset, a footprint in WGS 84."""

from __future__ import annotations

import json
from pathlib import Path

from rasterio.warp import transform_geom

STAC_VERSION = "1.1.0"
EXTENSIONS = {
    "projection": "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "classification": "https://stac-extensions.github.io/classification/v2.0.0/schema.json",
}
GEOTIFF = "image/tiff; application=geotiff"


def asset(path: Path, item_path: Path, title: str, roles: list[str], cog: bool) -> dict:
    """An asset pointing at ``path``: relative to the item when beside it (the pair moves
    together), else absolute."""
    try:
        href = "./" + path.resolve().relative_to(item_path.resolve().parent).as_posix()
    except ValueError:
        href = path.resolve().as_uri()
    kind = GEOTIFF + ("; profile=cloud-optimized" if cog else "")
    return {"href": href, "type": kind, "title": title, "roles": roles}


def wgs84_footprint(crs, bounds) -> dict:
    """The map's bounds as a GeoJSON polygon in longitude and latitude (as given without a
    CRS)."""
    west, south, east, north = bounds
    ring = [(west, south), (east, south), (east, north), (west, north), (west, south)]
    footprint = {"type": "Polygon", "coordinates": [ring]}
    if crs is not None:
        footprint = transform_geom(crs, "EPSG:4326", footprint, precision=7)
    return json.loads(json.dumps(footprint))  # tuples → lists


def classification_classes(classes) -> list[dict]:
    """The classification extension's classes: code as ``value``, a machine ``name``, the
    class name as ``title`` and its colour as ``color_hint``."""
    from .classmap import field_name

    return [
        {
            "value": int(c["code"]),
            "name": field_name(c["name"]),
            "title": str(c["name"]),
            "color_hint": str(c["colour"]).lstrip("#").upper(),
        }
        for c in classes
    ]
