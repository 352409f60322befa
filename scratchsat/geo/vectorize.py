"""Class maps to polygons (``scratchsat vectorize``), in strips of rows so memory stays bounded.

Each strip of the class map is polygonised with rasterio's ``shapes`` in pixel coordinates
(4-connected regions, so every polygon is valid and regions touching only at a corner stay
apart). A polygon that does not reach the strip's lower edge is finished and written at once;
one that does is held open and merged (exact unions of integer coordinates) with the polygons
of its class that share an edge with it in the next strip. What is held is therefore the
regions crossing one strip boundary, not the scene.

``--min-area`` runs GDAL's sieve on each strip with a halo as deep as the area in pixels (a
region smaller than that cannot reach further), so small regions merge into their largest
neighbour exactly as a sieve of the whole map would. Areas come from pixel counts (pixel area
× pixels: exact before ``--simplify``); the mean top probability from the uncertainty raster
of the same grid, summed per region while its pixels are at hand.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.features
from rasterio.transform import Affine
from rasterio.windows import Window

from ..errors import InputError
from .classmap import read_classes_tag, rgba
from .outputs import atomic_output, check_output, scratch_folder
from .raster import Grid, open_raster
from .sources import Source, as_source

DRIVERS = {  # suffix → OGR driver fiona writes; files each driver makes beside the first
    ".gpkg": ("GPKG", ()),
    ".geojson": ("GeoJSON", ()),
    ".json": ("GeoJSON", ()),
    ".fgb": ("FlatGeobuf", ()),
    ".shp": ("ESRI Shapefile", (".shx", ".dbf", ".prj", ".cpg")),
    ".gml": ("GML", (".xsd",)),
    ".kml": ("KML", ()),
}
LAYER = "classes"


@dataclass
class Region:
    """One 4-connected region of a class, in pixel coordinates (x = column, y = row)."""

    code: int
    geometry: Any  # a shapely Polygon
    pixels: int
    top_sum: float = 0.0


@dataclass
class VectorizeReport:
    path: Path
    features: int = 0
    pixels_by_code: dict[int, int] = field(default_factory=dict)
    units: str = ""  # of the area attribute's square


def driver_for(path: Path, driver: str | None) -> tuple[str, tuple[str, ...]]:
    if driver is not None:
        import fiona

        if driver not in fiona.supported_drivers or "w" not in fiona.supported_drivers[driver]:
            raise InputError(
                f"--driver {driver}: fiona cannot write that format; choose one of "
                f"{', '.join(sorted(d for d, m in fiona.supported_drivers.items() if 'w' in m))}"
            )
        siblings = next((s for d, s in DRIVERS.values() if d == driver), ())
        return driver, siblings
    found = DRIVERS.get(path.suffix.lower())
    if found is None:
        raise InputError(
            f"cannot tell the vector format of {path} from its suffix "
            f"{path.suffix or '(none)'}; name it .gpkg (GeoPackage), .geojson, .fgb or .shp, "
            "or pass --driver NAME (any OGR driver fiona writes)"
        )
    return found


def vector_files(path: Path, fmt: str, siblings: Sequence[str]) -> list[Path]:
    """The files a vector output of format ``fmt`` consists of (its QGIS style included)."""
    style = [] if fmt == "GPKG" else [path.with_suffix(".qml")]
    return [path, *(path.with_suffix(s) for s in siblings), *style]


def check_uncertainty(path: Source, grid: Grid) -> int:
    """The band index of ``top_probability`` in an uncertainty raster on ``grid``."""
    with open_raster(path) as src:
        other = Grid(src.crs, src.transform, src.width, src.height)
        if other != grid:
            raise InputError(
                f"{path} is not on the class map's grid ({other.width} × {other.height}, "
                f"{other.crs}, {tuple(other.transform)[:6]} vs {grid.width} × {grid.height}, "
                f"{grid.crs}, {tuple(grid.transform)[:6]}); pass the --uncertainty raster that "
                "predict wrote with this class map"
            )
        if "top_probability" not in src.descriptions:
            raise InputError(
                f"{path} has no band described as top_probability; pass the raster that "
                "`scratchsat predict --uncertainty` wrote"
            )
        return src.descriptions.index("top_probability") + 1


def _outline(name: str, rgb: str, width: float, dash: str = "solid") -> str:
    """A QGIS fill symbol of no fill and an outline of colour ``rgb`` (``"255,255,255"``)."""
    return (
        f'      <symbol type="fill" name="{name}" alpha="1" clip_to_extent="1" force_rhr="0">\n'
        '        <layer class="SimpleFill" enabled="1" pass="0" locked="0">\n'
        '          <Option type="Map"><Option name="color" type="QString" value="0,0,0,0"/>'
        f'<Option name="outline_color" type="QString" value="{rgb},255"/>'
        f'<Option name="outline_width" type="QString" value="{width}"/>'
        f'<Option name="outline_style" type="QString" value="{dash}"/>'
        '<Option name="style" type="QString" value="no"/></Option>\n'
        "        </layer>\n      </symbol>"
    )


def outline_style(
    field: str, categories: Sequence[tuple[str, str, str, str]], label: str = ""
) -> str:
    """A QGIS style drawing footprints as outlines only, categorised on ``field`` — each
    category ``(value, legend label, "r,g,b", "solid"|"dash")`` — and, with ``label``, each
    feature labelled by that field (``suggest``: the rank), so the imagery shows through."""
    cats = "\n".join(
        f'      <category render="true" symbol="{i}" value="{value}" label="{text}"/>'
        for i, (value, text, _, _) in enumerate(categories)
    )
    symbols = "\n".join(
        _outline(str(i), rgb, 0.6, dash) for i, (_, _, rgb, dash) in enumerate(categories)
    )
    labels = (
        '  <labeling type="simple">\n    <settings calloutType="simple">\n'
        f'      <text-style fieldName="{label}" fontSize="10" fontWeight="75" '
        'textColor="255,255,255,255" namedStyle="Bold">\n'
        '        <text-buffer bufferDraw="1" bufferSize="0.8" bufferColor="0,0,0,255"/>\n'
        "      </text-style>\n"
        '      <placement placement="1" offsetType="0"/>\n'
        "    </settings>\n  </labeling>\n"
        if label
        else ""
    )
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.28" styleCategories="Symbology|Labeling" '
        f'labelsEnabled="{int(bool(label))}">\n'
        f'  <renderer-v2 type="categorizedSymbol" attr="{field}" symbollevels="0" '
        'enableorderby="0" forceraster="0">\n'
        f"    <categories>\n{cats}\n    </categories>\n"
        f"    <symbols>\n{symbols}\n    </symbols>\n"
        "  </renderer-v2>\n" + labels + "</qgis>\n"
    )


def vector_style(classes: Sequence[dict]) -> str:
    """A QGIS categorised-renderer style on ``class_code``, filled with the class colours."""
    categories, symbols = [], []
    for i, c in enumerate(classes):
        r, g, b, _ = rgba(c["colour"])
        label = str(c["name"]).replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
        categories.append(
            f'      <category render="true" symbol="{i}" value="{c["code"]}" label="{label}"/>'
        )
        symbols.append(
            f'      <symbol type="fill" name="{i}" alpha="1" clip_to_extent="1" force_rhr="0">\n'
            '        <layer class="SimpleFill" enabled="1" pass="0" locked="0">\n'
            f'          <Option type="Map"><Option name="color" type="QString" '
            f'value="{r},{g},{b},255"/><Option name="outline_color" type="QString" '
            f'value="{r // 2},{g // 2},{b // 2},255"/><Option name="outline_width" '
            'type="QString" value="0.1"/><Option name="style" type="QString" value="solid"/>'
            "</Option>\n        </layer>\n      </symbol>"
        )
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.28" styleCategories="Symbology">\n'
        '  <renderer-v2 type="categorizedSymbol" attr="class_code" symbollevels="0" '
        'enableorderby="0" forceraster="0">\n'
        "    <categories>\n" + "\n".join(categories) + "\n    </categories>\n"
        "    <symbols>\n" + "\n".join(symbols) + "\n    </symbols>\n"
        "  </renderer-v2>\n</qgis>\n"
    )


def vectorize(
    classmap: str | os.PathLike,
    out: str | os.PathLike,
    *,
    uncertainty: str | os.PathLike | None = None,
    min_area: float = 0.0,
    drop_small: bool = False,
    simplify: float = 0.0,
    keep: Sequence[str] | None = None,
    driver: str | None = None,
    overwrite: bool = False,
    strip_rows: int = 512,
) -> VectorizeReport:
    """Write one polygon per connected region of each class of ``classmap`` to ``out``.

    ``min_area`` (in the CRS's units squared) merges smaller regions into their largest
    neighbour (or, with ``drop_small``, leaves them out); ``simplify`` (CRS units) simplifies
    each polygon without making it invalid; ``keep`` names (or codes) the classes to write.
    """
    import shapely

    source, out = as_source(classmap), Path(out)
    if min_area < 0 or simplify < 0:
        raise InputError(
            f"--min-area and --simplify must not be negative, not {min_area:g} and {simplify:g}"
        )
    fmt, siblings = driver_for(out, driver)
    grid, nodata, classes = read_class_map(source)
    top_band = check_uncertainty(as_source(uncertainty), grid) if uncertainty else None
    names = {int(c["code"]): str(c["name"]) for c in classes}
    wanted = _wanted_codes(keep, names, source)
    pixel_area = abs(grid.transform.determinant)
    sieve = math.ceil(min_area / pixel_area - 1e-9) if min_area > 0 else 0
    projected = bool(grid.crs.is_projected)
    units = grid.crs.linear_units if projected else "degrees"
    if sieve >= grid.width * grid.height:
        whole = grid.width * grid.height * pixel_area
        raise InputError(
            f"--min-area {min_area:g} is not smaller than the whole map {source} "
            f"({whole:,.0f} {units}², {grid.width} × {grid.height} px): every region "
            "would merge into one; pass an area smaller than the regions you want to keep"
        )
    properties = {"class_code": "int", "class_name": "str", "pixels": "int", "area": "float"}
    if projected:
        properties["area_ha"] = "float"
    if top_band is not None:
        properties["mean_top_probability"] = "float"
    schema = {"geometry": "Polygon", "properties": properties}
    report = VectorizeReport(out, units=units)
    for path in vector_files(out, fmt, siblings):
        check_output(path, overwrite)
    found = regions(
        source, grid, nodata, wanted, sieve, drop_small, uncertainty, top_band, strip_rows
    )

    def feature(region: Region) -> dict:
        polygon = _to_map(region.geometry, grid.transform)
        if simplify > 0:
            polygon = polygon.simplify(simplify, preserve_topology=True)
        area = region.pixels * pixel_area
        props: dict = {
            "class_code": region.code,
            "class_name": names.get(region.code, f"class {region.code}"),
            "pixels": region.pixels,
            "area": area,
        }
        if projected:
            props["area_ha"] = area * _metres(grid.crs) ** 2 / 10_000
        if top_band is not None:
            props["mean_top_probability"] = region.top_sum / region.pixels
        report.features += 1
        report.pixels_by_code[region.code] = report.pixels_by_code.get(region.code, 0) + (
            region.pixels
        )
        return {"geometry": shapely.geometry.mapping(polygon), "properties": props}

    features = (feature(region) for region in found)
    write_features(out, fmt, schema, grid, features, found, classes, report, overwrite)
    return report


def read_class_map(source) -> tuple[Grid, int | None, list[dict]]:
    """A class map's grid, nodata and classes, refused where it is not one (several bands,
    not integers, a fractional nodata, no CRS)."""
    with open_raster(source) as src:
        if src.count != 1:
            raise InputError(
                f"{source} has {src.count} bands; vectorize takes a class map (one band), "
                "as `scratchsat predict` writes"
            )
        if not np.issubdtype(np.dtype(src.dtypes[0]), np.integer):
            raise InputError(f"{source} is {src.dtypes[0]}; a class map holds integer class codes")
        if src.nodata is not None and not float(src.nodata).is_integer():
            raise InputError(
                f"{source} has nodata {src.nodata:g}, not an integer code; set an integer nodata "
                "(gdal_edit -a_nodata) or none"
            )
        grid = Grid(src.crs, src.transform, src.width, src.height)
        nodata = None if src.nodata is None else int(src.nodata)
        classes = read_classes_tag(src.tags()) or []
    if grid.crs is None:
        raise InputError(f"{source} has no CRS; polygons need one (set it with gdal_edit -a_srs)")
    return grid, nodata, classes


def write_features(
    out: Path, fmt: str, schema, grid: Grid, features, found, classes, report, overwrite: bool
) -> None:
    """Write ``features`` (made from the regions ``found``) and the style into a scratch
    folder, count them back, and put every file in place."""
    import fiona
    from fiona.crs import CRS

    with scratch_folder(out) as folder:
        staged = folder / out.name
        crs = CRS.from_wkt(grid.crs.to_wkt())
        layer = {"layer": LAYER} if fmt == "GPKG" else {}
        with (
            fiona.open(staged, "w", driver=fmt, schema=schema, crs=crs, **layer) as dst,
            contextlib.closing(found),  # its rasters close before fiona's GDAL env
        ):
            for feature in features:
                dst.write(feature)
        style_classes = classes or [
            {"code": c, "name": f"class {c}", "colour": "#808080"} for c in report.pixels_by_code
        ]
        style = vector_style(style_classes)
        if fmt == "GPKG":
            store_style(staged, style)  # QGIS loads it as the layer's default style
        else:
            (folder / out.with_suffix(".qml").name).write_text(style)  # QGIS looks beside
        with fiona.open(staged, **layer) as check:
            if len(check) != report.features:
                raise OSError(f"{out} holds {len(check)} features of {report.features} written")
        made = sorted(p for p in folder.iterdir())
        with contextlib.ExitStack() as stack:
            for path in made:
                final = out.with_name(path.name)
                tmp = stack.enter_context(atomic_output(final, overwrite))
                os.replace(path, tmp)


STYLE_FIELDS = {  # the layer_styles table QGIS reads a GeoPackage layer's default style from
    "f_table_catalog": "str",
    "f_table_schema": "str",
    "f_table_name": "str",
    "f_geometry_column": "str",
    "styleName": "str",
    "styleQML": "str",
    "styleSLD": "str",
    "useAsDefault": "bool",
    "description": "str",
    "owner": "str",
    "ui": "str",
    "update_time": "datetime",
}


def store_style(gpkg: Path, style: str, layer: str = LAYER, what: str = "") -> None:
    """Store ``style`` as the default QGIS style of ``layer``, inside the GeoPackage."""
    import fiona

    row = {
        "f_table_catalog": "",
        "f_table_schema": "",
        "f_table_name": layer,
        "f_geometry_column": "geom",
        "styleName": layer,
        "styleQML": style,
        "styleSLD": "",
        "useAsDefault": True,
        "description": what or "class colours written by scratchsat vectorize",
        "owner": "",
        "ui": "",
        "update_time": None,
    }
    schema = {"geometry": None, "properties": STYLE_FIELDS}
    with fiona.open(gpkg, "w", driver="GPKG", schema=schema, layer="layer_styles") as dst:
        dst.write({"geometry": None, "properties": row})


def _wanted_codes(keep, names: dict[int, str], source) -> set[int] | None:
    if not keep:
        return None
    by_name = {n: c for c, n in names.items()}
    codes = set()
    for item in keep:
        if item in by_name:
            codes.add(by_name[item])
        elif item.isdigit() and (not names or int(item) in names):
            codes.add(int(item))
        else:
            known = ", ".join(f"{n} ({c})" for c, n in sorted(names.items())) or "codes only"
            raise InputError(f"--classes {item}: {source} has no such class; it has {known}")
    return codes


def _metres(crs) -> float:
    factor = crs.linear_units_factor[1] if crs.is_projected else 1.0
    return float(factor)


def _to_map(polygon, transform: Affine):
    import shapely

    a, b, c, d, e, f = tuple(transform)[:6]
    return shapely.affinity.affine_transform(polygon, [a, b, d, e, c, f])


def _strips(height: int, rows: int) -> Iterator[tuple[int, int]]:
    for top in range(0, height, rows):
        yield top, min(top + rows, height)


def regions(
    source: Source,
    grid: Grid,
    nodata: int | None,
    wanted: set[int] | None,
    sieve: int,
    drop_small: bool,
    uncertainty,
    top_band: int | None,
    strip_rows: int,
) -> Generator[Region, None, None]:
    """Every finished region, strip by strip; regions crossing a strip edge are merged."""
    from shapely.geometry import shape

    halo = sieve if sieve > 1 and not drop_small else 0
    open_regions: list[Region] = []  # touch the previous strip's lower edge
    with contextlib.ExitStack() as stack:
        src = stack.enter_context(open_raster(source))
        tops = stack.enter_context(open_raster(uncertainty)) if top_band else None
        for top, bottom in _strips(grid.height, strip_rows):
            lo, hi = max(0, top - halo), min(grid.height, bottom + halo)
            codes = src.read(1, window=Window(0, lo, grid.width, hi - lo))
            valid = codes != nodata if nodata is not None else np.ones(codes.shape, bool)
            codes = as_shape_codes(codes, valid, source, lo)
            if sieve > 1 and not drop_small:
                codes = rasterio.features.sieve(codes, sieve, mask=valid, connectivity=4)
            codes, valid = codes[top - lo : bottom - lo], valid[top - lo : bottom - lo]
            if wanted is not None:
                valid &= np.isin(codes, list(wanted))
            found = []
            shifted = Affine.translation(0, top)
            for geometry, value in rasterio.features.shapes(
                codes, mask=valid, connectivity=4, transform=shifted
            ):
                polygon = shape(geometry)  # integer pixel corners: its area is its pixels
                found.append(Region(int(value), polygon, round(polygon.area)))
            if tops is not None:
                _sum_tops(found, codes.shape, top, tops, top_band, grid.width)
            closed, open_regions = _merge(open_regions, found, top, bottom, grid.height)
            yield from (r for r in closed if not (drop_small and r.pixels < sieve))
        yield from (r for r in open_regions if not (drop_small and r.pixels < sieve))


SHAPE_DTYPES = ("uint8", "uint16", "int16", "int32")  # what GDAL's polygonize and sieve take


def as_shape_codes(codes: np.ndarray, valid: np.ndarray, source, row: int) -> np.ndarray:
    """``codes`` in a dtype GDAL polygonises: int8, uint32 and int64 maps are converted when
    their valid codes fit int32 (invalid pixels become 0, masked anyway), refused otherwise."""
    if codes.dtype.name in SHAPE_DTYPES:
        return codes
    limits = np.iinfo(np.int32)
    if valid.any():
        low, high = int(codes[valid].min()), int(codes[valid].max())
        if low < limits.min or high > limits.max:
            bad = high if high > limits.max else low
            raise InputError(
                f"{source} holds class code {bad} (near row {row}), which does not fit a 32-bit "
                f"integer; vectorize takes codes from {limits.min} to {limits.max}: recode the "
                "map (e.g. gdal_calc.py) to smaller codes"
            )
    return np.where(valid, codes, 0).astype(np.int32)


def _sum_tops(found: list[Region], shape_: tuple[int, int], top: int, tops, band, width) -> None:
    """Each region's summed top probability, from one rasterisation of the strip's regions."""
    if not found:
        return
    ids = rasterio.features.rasterize(
        ((r.geometry, i + 1) for i, r in enumerate(found)),
        out_shape=shape_,
        transform=Affine.translation(0, top),
        fill=0,
        dtype="int32",
    ).ravel()
    values = tops.read(band, window=Window(0, top, width, shape_[0])).astype(np.float64)
    sums = np.bincount(ids, weights=np.nan_to_num(values).ravel(), minlength=len(found) + 1)
    for i, region in enumerate(found):
        region.top_sum = float(sums[i + 1])


def _merge(
    held: list[Region], found: list[Region], top: int, bottom: int, height: int
) -> tuple[list[Region], list[Region]]:
    """Join ``held`` regions (touching row ``top`` from above) with ``found`` ones sharing an
    edge on that row; return (finished regions, regions to hold for the next strip)."""
    import shapely

    parent = list(range(len(held) + len(found)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if held:
        tree = shapely.STRtree([h.geometry for h in held])
        for j, region in enumerate(found):
            if region.geometry.bounds[1] != top:
                continue  # does not reach up to the held regions
            for i in tree.query(region.geometry, predicate="intersects"):
                if held[i].code == region.code:
                    shared = held[i].geometry.intersection(region.geometry)
                    if shared.length > 0:  # an edge, not a corner: 4-connected
                        parent[root(int(i))] = root(len(held) + j)
    groups: dict[int, list[Region]] = {}
    for k, region in enumerate([*held, *found]):
        groups.setdefault(root(k), []).append(region)
    finished, kept = [], []
    for members in groups.values():
        region = members[0]
        if len(members) > 1:
            merged = shapely.union_all([m.geometry for m in members])
            region = Region(
                region.code,
                merged,
                sum(m.pixels for m in members),
                sum(m.top_sum for m in members),
            )
        if region.geometry.bounds[3] == bottom and bottom < height:
            kept.append(region)
        else:
            finished.append(region)
    return finished, kept
