"""``scratchsat stack``: per-band files → one multi-band GeoTIFF on one grid.

The grid is the first input's CRS, with the extent and pixel origin of the finest input (or at
the resolution asked for); where an input does not reach, or its mask (an alpha band, which is
not stacked) says so, its band is nodata. Bands are
resampled onto it by GDAL's warper, one strip of rows at a time, so memory does not grow with
the scene.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.transform import Affine
from rasterio.warp import calculate_default_transform, transform_bounds
from rasterio.windows import Window

from ..errors import BandError, InputError, NoOverlapError
from ..geo.acquisition import acquired, iso
from ..geo.classmap import rgb_style, style_path
from ..geo.outputs import atomic_output, check_output, write_text
from ..geo.raster import (
    Grid,
    check_written,
    data_bands,
    disjoint,
    gdal_env,
    geotiff_profile,
    open_raster,
    read_decimated,
    read_on_grid,
    reads_mask_band,
    to_cog,
)
from ..geo.sources import Source, as_source

RESAMPLING = ("nearest", "bilinear", "cubic", "average", "mode")
RGB_NAMES = (("B04", "B03", "B02"), ("red", "green", "blue"), ("r", "g", "b"))  # Sentinel-2, …


def rgb_bands(names: Sequence[str]) -> tuple[int, int, int] | None:
    """The 1-based bands of red, green and blue, where the band names say which they are:
    Sentinel-2's B04, B03, B02, or red, green, blue (R, G, B; any case)."""
    lower = [str(n).lower() for n in names]
    for triple in RGB_NAMES:
        if all(t.lower() in lower for t in triple):
            red, green, blue = (lower.index(t.lower()) + 1 for t in triple)
            return red, green, blue
    return None


def write_rgb_style(path: Path, bands: tuple[int, int, int], overwrite: bool) -> Path:
    """``SCENE.qml``: QGIS draws the stack in true colour, 2–98 % stretched (from a read of at
    most 1024 px a side), instead of its first three bands in false colour."""
    data = read_decimated(path, list(bands))
    stretch = []
    for band in data:
        values = band.compressed()
        values = values[np.isfinite(values)] if values.dtype.kind == "f" else values
        low, high = np.percentile(values, (2, 98)) if len(values) else (0.0, 1.0)
        stretch.append((float(low), float(high)))
    style = style_path(path)
    write_text(style, rgb_style(bands, stretch), overwrite=overwrite)
    return style


Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class _Input:
    path: Source
    count: int
    dtype: str
    nodata: float | None
    crs: CRS
    transform: Affine
    width: int
    height: int
    descriptions: tuple[str | None, ...]
    bands: tuple[int, ...]  # the data bands (alpha bands are the others' mask)
    masked: bool  # GDAL's mask band marks invalid pixels
    acquired: dt.datetime | None = None  # from its tags or its name (geo.acquisition)


def _describe(path: Source) -> _Input:
    with open_raster(path) as src:
        if src.crs is None:
            raise InputError(f"{path}: has no CRS; stack needs georeferenced inputs")
        bands = data_bands(src)
        return _Input(
            path,
            len(bands),
            src.dtypes[bands[0] - 1],
            src.nodata,
            src.crs,
            src.transform,
            src.width,
            src.height,
            tuple(src.descriptions[i - 1] for i in bands),
            tuple(bands),
            reads_mask_band(src, bands),
            acquired(path, src.tags())[0],
        )


def _bounds_in(item: _Input, crs) -> tuple[float, float, float, float]:
    """(west, south, east, north) of ``item`` in ``crs``."""
    bounds = rasterio.transform.array_bounds(item.height, item.width, item.transform)
    return transform_bounds(item.crs, crs, *bounds) if item.crs != crs else bounds


def _resolution_in(item: _Input, crs) -> tuple[float, float]:
    if item.crs == crs:
        return abs(item.transform.a), abs(item.transform.e)
    bounds = rasterio.transform.array_bounds(item.height, item.width, item.transform)
    transform, _, _ = calculate_default_transform(item.crs, crs, item.width, item.height, *bounds)
    return abs(transform.a), abs(transform.e)


def target_grid(inputs: Sequence[_Input], resolution: float | None) -> Grid:
    """The common grid: the first input's CRS, and the extent and pixel origin of the first
    input with the finest resolution (the 10 m band of a Sentinel-2 set), at that resolution
    or at ``resolution``."""
    crs = inputs[0].crs
    resolutions = [_resolution_in(item, crs) for item in inputs]
    areas = [x * y for x, y in resolutions]
    # The first input within 1% of the finest pixel area: a warp estimate of 9.97 m must not
    # beat a native 10 m grid.
    finest = next(i for i, area in enumerate(areas) if area <= min(areas) * 1.01)
    reference = inputs[finest]
    west, south, east, north = _bounds_in(reference, crs)
    for item in inputs:
        box = _bounds_in(item, crs)
        if disjoint(box, (west, south, east, north)):
            raise NoOverlapError(
                f"{item.path} does not overlap {reference.path} (bounds {_fmt(box)} vs "
                f"{_fmt((west, south, east, north))} in {crs.to_string()}); "
                "stack files of the same area"
            )
    xres, yres = (resolution, resolution) if resolution else resolutions[finest]
    if reference.crs == crs:
        x0, y0 = reference.transform.c, reference.transform.f
    else:
        x0, y0 = west, north
    # Snap outward to the reference's pixel origin so its pixels are not shifted.
    eps = 1e-6
    left = x0 + math.floor((west - x0) / xres + eps) * xres
    right = x0 + math.ceil((east - x0) / xres - eps) * xres
    top = y0 - math.floor((y0 - north) / yres + eps) * yres
    bottom = y0 - math.ceil((y0 - south) / yres - eps) * yres
    width, height = round((right - left) / xres), round((top - bottom) / yres)
    return Grid(crs, Affine(xres, 0, left, 0, -yres, top), width, height)


def _fmt(box) -> str:
    return "(" + ", ".join(f"{v:.1f}" for v in box) + ")"


def common_dtype(dtypes: Sequence[str]) -> str:
    """The smallest dtype that holds every input dtype without loss (int16 + float32 → float32)."""
    return np.result_type(*[np.dtype(d) for d in dtypes]).name


def common_nodata(inputs: Sequence[_Input], dtype: str, grid: Grid) -> float | None:
    """One nodata for the output: the first declared one that ``dtype`` can hold; where none
    is declared but an input leaves part of the grid empty or has a mask (or alpha) band, 0
    (unsigned), the minimum (signed) or NaN (float)."""
    info = np.finfo(dtype) if np.dtype(dtype).kind == "f" else np.iinfo(dtype)
    for value in (item.nodata for item in inputs if item.nodata is not None):
        if np.isnan(value) or info.min <= value <= info.max:
            return float(value)
    if any(item.nodata is not None or item.masked for item in inputs) or not all(
        _covers(item, grid) for item in inputs
    ):
        return float("nan") if np.dtype(dtype).kind == "f" else float(max(info.min, 0))
    return None


def _covers(item: _Input, grid: Grid) -> bool:
    """Whether ``item`` reaches every edge of ``grid`` (within half a grid pixel)."""
    west, south, east, north = _bounds_in(item, grid.crs)
    g_west, g_south, g_east, g_north = grid.bounds
    half = abs(grid.transform.a) / 2
    return (
        west <= g_west + half
        and south <= g_south + half
        and east >= g_east - half
        and north >= g_north - half
    )


def default_band_names(inputs: Sequence[_Input]) -> list[str]:
    """Band names from file names, with the prefix all files share removed (…_B01 → B01)."""
    stems = [item.path.stem for item in inputs]
    prefix = os.path.commonprefix(stems) if len(stems) > 1 else ""
    cut = max(prefix.rfind(sep) for sep in "_-. ") + 1 if prefix else 0
    names = []
    for item, stem in zip(inputs, stems, strict=True):
        short = stem[cut:] or stem
        if item.count == 1:
            names.append(short)
        else:
            names.extend(d or f"{short}_{i}" for i, d in enumerate(item.descriptions, 1))
    return names


def stack(
    paths: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    resolution: float | None = None,
    band_names: Sequence[str] | None = None,
    resampling: str = "bilinear",
    cog: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Stack the bands of ``paths`` (in order) into one tiled, compressed GeoTIFF at ``out``;
    where every input says the same acquisition time (tags or file name), it is kept in the
    output's ``ACQUISITION_DATE`` tag. Where band names say which bands are red, green and
    blue (:func:`rgb_bands`), they get that colour interpretation and a ``.qml`` that QGIS
    draws in true colour. ``cog``: a Cloud-Optimized GeoTIFF with overviews."""
    if not paths:
        raise InputError("stack needs at least one input file")
    if resampling not in RESAMPLING:
        raise InputError(
            f"unknown resampling {resampling!r}; choose one of {', '.join(RESAMPLING)}"
        )
    if resolution is not None and resolution <= 0:
        raise InputError(f"--resolution must be positive, got {resolution}")
    check_output(out, overwrite)
    for p in paths:
        if os.path.exists(out) and os.path.exists(p) and os.path.samefile(p, out):
            raise InputError(f"--out {out} is the input {p} itself; choose another output")
    inputs = [_describe(as_source(p)) for p in paths]
    total = sum(item.count for item in inputs)
    names = list(band_names) if band_names else default_band_names(inputs)
    if len(names) != total:
        raise BandError(
            f"{len(names)} band names given ({', '.join(names)}) but the inputs hold "
            f"{total} bands; pass one name per band, in input order"
        )
    rgb = rgb_bands(names)
    if rgb is not None:
        check_output(style_path(Path(out)), overwrite)
    grid = target_grid(inputs, resolution)
    dtype = common_dtype([item.dtype for item in inputs])
    nodata = common_nodata(inputs, dtype, grid)
    profile = geotiff_profile(
        width=grid.width,
        height=grid.height,
        count=total,
        dtype=dtype,
        crs=grid.crs,
        transform=grid.transform,
        nodata=nodata,
    )
    size = grid.width * grid.height * total * np.dtype(dtype).itemsize  # uncompressed
    with atomic_output(out, overwrite, check=check_written, size_hint=size) as tmp, gdal_env():
        with rasterio.open(tmp, "w", **profile) as dst:
            _write_contents(dst, inputs, names, rgb, grid, Resampling[resampling], progress)
        if cog:
            to_cog(tmp, "average")
    if rgb is not None:
        write_rgb_style(Path(out), rgb, overwrite)
    return Path(out)


def _write_contents(dst, inputs, names, rgb, grid, resampling, progress) -> None:
    """The bands, their names, sources and colours, and the acquisition time."""
    _write_bands(dst, inputs, grid, dst.dtypes[0], dst.nodata, resampling, progress)
    dst.descriptions = tuple(names)
    if rgb is not None:
        colours = [ColorInterp.undefined] * dst.count
        for band, colour in zip(
            rgb, (ColorInterp.red, ColorInterp.green, ColorInterp.blue), strict=True
        ):
            colours[band - 1] = colour
        dst.colorinterp = colours
    times = {item.acquired for item in inputs}
    if len(times) == 1 and None not in times:  # one acquisition: keep it (mixed: say none)
        dst.update_tags(ACQUISITION_DATE=iso(times.pop()))  # type: ignore[arg-type]
    band = 1
    for item in inputs:
        for _ in range(item.count):
            # a local file by its name; a URL or /vsi… path whole, as given
            source = item.path.name if isinstance(item.path, Path) else str(item.path)
            dst.update_tags(band, SOURCE=source)
            band += 1


def _write_bands(
    dst,
    inputs: Sequence[_Input],
    grid: Grid,
    dtype: str,
    nodata: float | None,
    resampling: Resampling,
    progress: Progress | None,
) -> None:
    rows = 512
    strips = [
        Window(0, r, grid.width, min(rows, grid.height - r)) for r in range(0, grid.height, rows)
    ]
    band = 1
    done, steps = 0, len(strips) * len(inputs)
    for item in inputs:
        dst_indexes = list(range(band, band + item.count))
        with open_raster(item.path) as src:
            for window in strips:
                out, invalid = read_on_grid(src, item.bands, grid, window, dtype, resampling)
                if nodata is not None:
                    out[invalid] = nodata
                dst.write(out, indexes=dst_indexes, window=window)
                done += 1
                if progress:
                    progress(done, steps)
        band += item.count
