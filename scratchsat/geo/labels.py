"""Labels onto a scene's grid: label rasters (nearest neighbour) and vector polygons (rasterized).

Labels come out as class ids (uint8) per pixel, ``IGNORE_INDEX`` (255) where unlabelled. A label
raster keeps the user's class codes (codes 1..7 train a model that predicts 1..7); a vector
field of strings gets codes 1..K in sorted order, recorded with the names.

Overlapping polygons: the smaller polygon wins (a pond drawn inside a forest stays a pond);
polygons of equal area keep file order, the later one winning.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.features
from rasterio.enums import Resampling
from rasterio.warp import transform_bounds, transform_geom
from rasterio.windows import Window

from ..errors import LabelError, NoOverlapError, VectorReadError
from .raster import Grid, disjoint, gdal_settings, open_raster, read_on_grid, remote_reason
from .sources import Source, is_remote
from .stats import histogram_offset

IGNORE_INDEX = 255
MAX_CLASSES = 255  # ids 0..254; 255 is the ignore index
MAX_CODE = 65535  # class maps are uint8 or uint16 (a free value is always left for nodata)
VECTOR_SUFFIXES = {".geojson", ".json", ".gpkg", ".shp", ".fgb", ".kml", ".gml", ".zip"}

# Colours for common land-cover names; other classes take the palette in order.
KNOWN_COLOURS = {
    "water": "#1f78b4",
    "forest": "#1b7837",
    "vegetation": "#4daf4a",
    "grass": "#b2df8a",
    "meadow": "#c7e9c0",
    "farm": "#fdbf6f",
    "farmland": "#fdbf6f",
    "cropland": "#fdbf6f",
    "scrub": "#78c679",
    "wetland": "#66c2a5",
    "residential": "#e31a1c",
    "built-up": "#e31a1c",
    "urban": "#e31a1c",
    "industrial": "#6a3d9a",
    "bare soil": "#a6761d",
    "bare": "#a6761d",
    "background": "#bdbdbd",
}
PALETTE = (
    "#e41a1c",
    "#377eb8",
    "#4daf4a",
    "#984ea3",
    "#ff7f00",
    "#ffff33",
    "#a65628",
    "#f781bf",
    "#999999",
    "#66c2a5",
    "#fc8d62",
    "#8da0cb",
    "#e78ac3",
    "#a6d854",
)


@dataclass(frozen=True)
class ClassInfo:
    """One class: ``id`` is the model's output index, ``code`` the value written to rasters."""

    id: int
    code: int
    name: str
    colour: str


@dataclass(frozen=True)
class LabelSpec:
    """Where labels come from; small and picklable so worker processes can open it."""

    path: Source
    field: str | None = None
    background: str | None = None

    @property
    def is_vector(self) -> bool:
        return self.path.suffix.lower() in VECTOR_SUFFIXES


def build_classes(
    codes: Sequence[int], names: Sequence[str] | None = None, source: object = "the labels"
) -> list[ClassInfo]:
    """Class table for sorted ``codes`` (names default to the codes as text). Codes must fit
    an unsigned 16-bit class map, which keeps a value free for nodata (see
    ``classmap.class_dtype_and_nodata``); ``source`` names the labels in the message."""
    if len(codes) > MAX_CLASSES:
        raise LabelError(f"{len(codes)} classes found; at most {MAX_CLASSES} are supported")
    outside = [int(c) for c in codes if not 0 <= int(c) <= MAX_CODE]
    if outside:
        raise LabelError(
            f"{source}: class code {outside[0]} is outside 0..{MAX_CODE}; class maps are "
            "written as 8- or 16-bit unsigned integers with one value kept free for nodata. "
            "Recode the labels into that range (gdal_calc.py, or the vector field), or declare "
            f"{outside[0]} the label raster's nodata if it marks unlabelled pixels"
        )
    names = list(names) if names is not None else [str(c) for c in codes]
    classes, spare = [], iter(PALETTE * (1 + len(codes) // len(PALETTE)))
    for i, (code, name) in enumerate(zip(codes, names, strict=True)):
        colour = KNOWN_COLOURS.get(name.lower()) or next(spare)
        classes.append(ClassInfo(i, int(code), name, colour))
    return classes


def codes_to_ids(
    codes: np.ndarray, invalid: np.ndarray, classes: Sequence[ClassInfo]
) -> np.ndarray:
    """Map code values to class ids (uint8); invalid pixels and unknown codes → IGNORE_INDEX."""
    offset = histogram_offset(codes.dtype)
    if offset is not None:  # 8/16-bit integers: one look-up table over every possible value
        table = np.full(2 ** (8 * codes.dtype.itemsize), IGNORE_INDEX, np.uint8)
        for c in classes:
            if 0 <= c.code + offset < len(table):
                table[c.code + offset] = c.id
        ids = table[codes.astype(np.int32) + offset] if offset else table[codes]
        ids[invalid] = IGNORE_INDEX
        return ids
    known = np.array([c.code for c in classes], dtype=np.float64)
    position = np.clip(np.searchsorted(known, codes), 0, len(known) - 1)
    ids = np.where((known[position] == codes) & ~invalid, position, IGNORE_INDEX)
    return ids.astype(np.uint8)


def code_dtype(src: rasterio.DatasetReader) -> str:
    """The dtype label codes are read in: the raster's own for 8/16-bit integers (exact and
    cheap to map), float64 otherwise (so non-integer values can be caught)."""
    return src.dtypes[0] if histogram_offset(src.dtypes[0]) is not None else "float64"


# ---- label rasters -------------------------------------------------------------------------


def raster_codes(spec: LabelSpec, grid: Grid, rows: int = 512) -> np.ndarray:
    """Sorted unique class codes of a label raster over ``grid`` (read strip by strip)."""
    found: set[float] = set()
    with open_raster(spec.path) as src:
        if src.count != 1:
            raise LabelError(
                f"{spec.path}: a label raster needs 1 band, found {src.count}; "
                "pass a single-band raster of class codes"
            )
        dtype = code_dtype(src)
        offset = histogram_offset(np.dtype(dtype))
        for row in range(0, grid.height, rows):
            window = Window(0, row, grid.width, min(rows, grid.height - row))
            data, invalid = read_on_grid(src, [1], grid, window, dtype)
            values = data[~invalid]
            if offset is None:
                found.update(np.unique(values).tolist())
            else:  # a histogram finds the codes present without sorting every pixel
                counts = np.bincount(values.astype(np.int32) + offset if offset else values)
                found.update((np.flatnonzero(counts) - offset).tolist())
    codes = np.array(sorted(found))
    fractional = codes[codes != np.round(codes)]
    if len(fractional):
        raise LabelError(
            f"{spec.path}: holds non-integer values such as {fractional[0]:g}; "
            "class codes must be whole numbers"
        )
    return codes.astype(np.int64)


def read_raster_ids(
    spec: LabelSpec, grid: Grid, window: Window, classes: Sequence[ClassInfo]
) -> np.ndarray:
    """Class ids (H, W) of a label raster under ``window`` of the scene ``grid``."""
    with open_raster(spec.path) as src:
        data, invalid = read_on_grid(src, [1], grid, window, code_dtype(src), Resampling.nearest)
    return codes_to_ids(data[0], invalid[0], classes)


# ---- vector labels -------------------------------------------------------------------------


@dataclass(frozen=True)
class Shapes:
    """Vector labels reprojected to one CRS: geometries, class codes, areas and bounding boxes."""

    geometries: tuple[dict, ...]
    codes: np.ndarray  # (N,) int64
    boxes: np.ndarray  # (N, 4) west, south, east, north
    classes: tuple[ClassInfo, ...]


def _vector_fields(path: Source) -> tuple[list[dict], str, list[str]]:
    """Features (geometry + properties), CRS as WKT and field names of a vector file."""
    import fiona  # only vector labels need it
    from fiona.errors import FionaError

    try:
        # fiona has its own GDAL: the same settings (remote reading above all) go to it too
        with fiona.Env(**gdal_settings(path)), fiona.open(path) as collection:
            fields = list(collection.schema["properties"])
            features = [
                {"geometry": f.geometry, "properties": dict(f.properties)} for f in collection
            ]
            crs_wkt = collection.crs_wkt
    except (FionaError, OSError) as exc:
        if not path.exists():
            raise VectorReadError(f"{path}: no such file; check the path") from None
        remote = remote_reason(str(exc))
        if is_remote(path) and remote:
            raise VectorReadError(f"{path}: {remote}") from None
        raise VectorReadError(
            f"{path}: cannot be read as vector labels ({exc}); pass a "
            "GeoJSON, GeoPackage or Shapefile"
        ) from None
    return features, crs_wkt, fields


def read_shapes(spec: LabelSpec, crs_wkt: str) -> Shapes:
    """Read vector labels, check the class field and reproject them to ``crs_wkt`` (cached
    per process while the file is unchanged)."""
    stat = spec.path.stat() if isinstance(spec.path, Path) and spec.path.exists() else None
    return _read_shapes(spec, crs_wkt, stat and (stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=4)
def _read_shapes(spec: LabelSpec, crs_wkt: str, version: tuple | None) -> Shapes:
    features, src_wkt, fields = _vector_fields(spec.path)
    if not features:
        raise LabelError(
            f"{spec.path} holds no features (no polygons); pass vector labels with polygons "
            "of the classes"
        )
    if spec.field is None or spec.field not in fields:
        what = "needs --label-field" if spec.field is None else f"has no field {spec.field!r}"
        raise LabelError(f"{spec.path} {what}; its fields are: {', '.join(fields) or '(none)'}")
    if not src_wkt:
        raise LabelError(
            f"{spec.path}: has no CRS; set one (e.g. with ogr2ogr -a_srs) so the "
            "polygons can be placed on the scene"
        )
    kept = [
        f
        for f in features
        if f["geometry"] is not None and f["properties"].get(spec.field) is not None
    ]
    values = [f["properties"][spec.field] for f in kept]
    numeric = all(
        isinstance(v, (int, np.integer)) or (isinstance(v, float) and v.is_integer())
        for v in values
    )
    if numeric:
        codes = np.array([int(v) for v in values], dtype=np.int64)
        unique = sorted(set(codes.tolist()))
        names = [str(c) for c in unique]
    else:
        names = sorted({str(v) for v in values})
        unique = list(range(1, len(names) + 1))
        lookup = dict(zip(names, unique, strict=True))
        codes = np.array([lookup[str(v)] for v in values], dtype=np.int64)
    if spec.background is not None:
        background_code = 0 if 0 not in unique else max(unique) + 1
        unique, names = [background_code, *unique], [spec.background, *names]
        order = np.argsort(unique)
        unique, names = [unique[i] for i in order], [names[i] for i in order]
    classes = tuple(build_classes(unique, names, spec.path))
    geometries = tuple(dict(transform_geom(src_wkt, crs_wkt, f["geometry"])) for f in kept)
    boxes = np.array([_bbox(g) for g in geometries]).reshape(-1, 4)
    # Draw larger polygons first so the smaller one wins where they overlap.
    order = np.argsort([-_area(g) for g in geometries], kind="stable")
    return Shapes(tuple(geometries[i] for i in order), codes[order], boxes[order], classes)


def read_vector_ids(spec: LabelSpec, grid: Grid, window: Window) -> np.ndarray:
    """Class ids (H, W) of vector labels rasterized under ``window`` of ``grid``."""
    shapes = read_shapes(spec, grid.crs.to_wkt())
    transform = rasterio.windows.transform(window, grid.transform)
    west, south, east, north = rasterio.windows.bounds(window, grid.transform)
    hits = (
        (shapes.boxes[:, 0] < east)
        & (shapes.boxes[:, 2] > west)
        & (shapes.boxes[:, 1] < north)
        & (shapes.boxes[:, 3] > south)
    )
    ids = {c.code: c.id for c in shapes.classes}
    shape = (int(window.height), int(window.width))
    fill = IGNORE_INDEX
    if spec.background is not None:
        fill = next(c.id for c in shapes.classes if c.name == spec.background)
    pairs = [(shapes.geometries[i], ids[int(shapes.codes[i])]) for i in np.flatnonzero(hits)]
    if not pairs:
        return np.full(shape, fill, dtype=np.uint8)
    return rasterio.features.rasterize(
        pairs, out_shape=shape, transform=transform, fill=fill, dtype="uint8"
    )


def vector_bounds(spec: LabelSpec, grid: Grid) -> tuple[float, float, float, float]:
    """Bounds of all polygons in the scene's CRS."""
    boxes = read_shapes(spec, grid.crs.to_wkt()).boxes
    if not len(boxes):
        raise LabelError(
            f"{spec.path}: no feature has both a geometry and a value in {spec.field!r}"
        )
    return boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max()


def _rings(geometry: dict) -> list[list[list]]:
    kind, coords = geometry["type"], geometry["coordinates"]
    if kind == "Polygon":
        return [coords]
    if kind == "MultiPolygon":
        return list(coords)
    raise LabelError(f"labels must be polygons, found a {kind}")


def _area(geometry: dict) -> float:
    """Planar area of a (multi)polygon (exterior minus holes), by the shoelace formula."""
    total = 0.0
    for polygon in _rings(geometry):
        for k, ring in enumerate(polygon):
            xy = np.asarray(ring, dtype=float)[:, :2]
            a = 0.5 * abs(np.dot(xy[:-1, 0], xy[1:, 1]) - np.dot(xy[1:, 0], xy[:-1, 1]))
            total += a if k == 0 else -a
    return total


def _bbox(geometry: dict) -> tuple[float, float, float, float]:
    xy = np.concatenate([np.asarray(r, dtype=float)[:, :2] for p in _rings(geometry) for r in p])
    return xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max()


# ---- either kind ---------------------------------------------------------------------------


def label_classes(spec: LabelSpec, grids: Sequence[Grid]) -> list[ClassInfo]:
    """The class table for ``spec`` over the scenes' grids; checks the labels overlap them."""
    if spec.is_vector:
        for grid in grids:
            check_overlap(spec, vector_bounds(spec, grid), grid)
        return list(read_shapes(spec, grids[0].crs.to_wkt()).classes)
    codes: set[int] = set()
    for grid in grids:
        with open_raster(spec.path) as src:
            box = (
                transform_bounds(src.crs, grid.crs, *src.bounds)
                if src.crs and src.crs != grid.crs
                else tuple(src.bounds)
            )
        check_overlap(spec, box, grid)
        codes.update(raster_codes(spec, grid).tolist())
    if not codes:
        raise LabelError(
            f"{spec.path}: no labelled pixel over the scene (all nodata); check "
            "the label raster's nodata value and extent"
        )
    names = raster_class_names(spec.path)
    return build_classes(sorted(codes), [names.get(c, str(c)) for c in sorted(codes)], spec.path)


def raster_class_names(path: Source) -> dict[int, str]:
    """Class names a label raster carries in its ``CLASSES`` tag (as scratchsat's class maps
    and synthetic scenes do), by code; empty when it has none."""
    with open_raster(path) as src:
        text = src.tags().get("CLASSES")
    try:
        return {int(c["code"]): str(c["name"]) for c in json.loads(text)} if text else {}
    except (ValueError, TypeError, KeyError):
        return {}


def read_ids(
    spec: LabelSpec, grid: Grid, window: Window, classes: Sequence[ClassInfo]
) -> np.ndarray:
    """Class ids (H, W) uint8 under ``window`` of ``grid``, IGNORE_INDEX where unlabelled."""
    if spec.is_vector:
        return read_vector_ids(spec, grid, window)
    return read_raster_ids(spec, grid, window, classes)


def check_overlap(spec: LabelSpec, box: Sequence[float], grid: Grid) -> None:
    west, south, east, north = grid.bounds
    if disjoint(box, grid.bounds):
        raise NoOverlapError(
            f"{spec.path} does not overlap the scene: labels cover "
            f"({box[0]:.1f}, {box[1]:.1f}, {box[2]:.1f}, {box[3]:.1f}), the scene "
            f"({west:.1f}, {south:.1f}, {east:.1f}, {north:.1f}) in {grid.crs.to_string()}; "
            "pass labels of the same area"
        )
