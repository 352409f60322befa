"""Raster I/O on rasterio: opening with clear errors, validity masks, band names, safe outputs.

Rasters a user hands us are opened through :func:`open_raster` (clear errors, remote paths,
the GDAL settings of this module); modules that write or re-read our own outputs use rasterio
directly. Vocabulary follows rasterio:
``src``/``dst`` datasets, ``profile``, ``crs``, ``transform``, ``window``, ``nodata`` and 1-based
``indexes``.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Interleaving, MaskFlags, Resampling
from rasterio.errors import RasterioError, WindowError
from rasterio.transform import Affine
from rasterio.warp import reproject, transform, transform_bounds
from rasterio.windows import Window

from ..errors import BandError, RasterReadError
from .outputs import IncompleteWrite
from .sources import as_source, is_remote

# Every GDAL setting scratchsat uses, in one place; a variable set in the environment wins.
DEFAULT_GDAL: dict = {
    "GDAL_NUM_THREADS": "ALL_CPUS",  # decoding threads; "ALL_CPUS" is GDAL's own spelling
    "GDAL_CACHEMAX": 512,  # MB of block cache
}
# Added for remote inputs only (https://, s3://, gs://, /vsi…): what Cloud-Optimized GeoTIFFs
# want. Not for local files: with no directory listing GDAL would miss their sidecars (.msk
# masks, .aux.xml, world files).
REMOTE_GDAL: dict = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no directory listing, no sidecar probes
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",  # one request for neighbouring blocks
    "GDAL_HTTP_MULTIPLEX": "YES",  # HTTP/2 where the server has it
    "GDAL_HTTP_MAX_RETRY": 3,  # transient errors (429, 502, 503, 504) are retried
    "GDAL_HTTP_RETRY_DELAY": 1,
    "VSI_CACHE": "TRUE",  # keep fetched ranges of an open file in memory…
    "VSI_CACHE_SIZE": 64 * 2**20,  # …up to 64 MB per file
    "CPL_VSIL_CURL_CACHE_SIZE": 128 * 2**20,  # and 128 MB of ranges across files
}
GDAL_ENV: dict = {k: v for k, v in DEFAULT_GDAL.items() if k not in os.environ}
GDAL_REMOTE_ENV: dict = {
    **GDAL_ENV,
    **{k: v for k, v in REMOTE_GDAL.items() if k not in os.environ},
}


def gdal_settings(path: str | os.PathLike | None = None) -> dict:
    """The GDAL settings for reading ``path``: the remote ones too for a URL or ``/vsi…``."""
    return GDAL_REMOTE_ENV if path is not None and is_remote(path) else GDAL_ENV


@contextlib.contextmanager
def open_raster(path: str | os.PathLike) -> Iterator[rasterio.DatasetReader]:
    """Open ``path`` for reading, turning GDAL's failures into a :class:`RasterReadError`."""
    with gdal_env(path):
        try:
            src = rasterio.open(path)
        except RasterioError as exc:
            reason = str(exc).strip() or type(exc).__name__
            if not as_source(path).exists():
                raise RasterReadError(f"{path}: no such file; check the path") from None
            remote = remote_reason(reason)
            if is_remote(path) and remote:
                raise RasterReadError(f"{path}: {remote}") from None
            raise RasterReadError(
                f"{path}: cannot be read as a raster ({reason}); pass a GeoTIFF, JPEG2000 or "
                "another format GDAL reads, and check that the file is complete"
            ) from None
        with src:
            yield src


def remote_reason(message: str) -> str | None:
    """What a GDAL network error means for the user, or None if it is not one."""
    code = re.search(r"HTTP (?:response )?code:? (\d{3})", message)
    status = int(code.group(1)) if code else None
    if status == 404 or "404" in message:
        return "not found on the server (HTTP 404); check the URL"
    if status in (401, 403) or "403" in message or "AccessDenied" in message:
        return (
            "access denied (HTTP 401/403); check the URL and your credentials (for s3:// "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE, AWS_NO_SIGN_REQUEST=YES "
            "for public buckets; for gs:// GOOGLE_APPLICATION_CREDENTIALS)"
        )
    if "Range downloading not supported" in message or "range" in message.lower():
        return (
            "the server does not answer HTTP range requests, so only parts of the file cannot "
            "be read; download it first, or serve it from a server that supports ranges"
        )
    if status is not None or "Couldn't connect" in message or "resolve host" in message:
        return f"could not be fetched ({message}); check the URL and the network"
    return None


def gdal_env(path: str | os.PathLike | None = None) -> rasterio.Env:
    """The GDAL settings scratchsat reads and writes rasters with (decoding threads, block
    cache; for a remote ``path``, those of :data:`REMOTE_GDAL` too), entered where rasters are
    opened; the user's environment variables win."""
    return rasterio.Env(**gdal_settings(path))


def read(
    src: rasterio.DatasetReader, indexes: Sequence[int], window: Window | None = None, **kwargs
) -> np.ndarray:
    """Read ``indexes`` (1-based) from ``src``; a corrupt block becomes a RasterReadError."""
    try:
        return src.read(list(indexes), window=window, **kwargs)
    except RasterioError as exc:
        raise RasterReadError(
            f"{src.name}: reading {window or 'the raster'} failed ({exc}); the file is corrupt "
            "or truncated, recreate or re-download it"
        ) from None


def read_shrunk(
    src: rasterio.DatasetReader, indexes: Sequence[int], max_side: int
) -> tuple[np.ndarray, float]:
    """(C, h, w) nearest-neighbour read shrunk so the longer side is at most ``max_side``
    (GDAL uses overviews where the file has them), and the shrink factor (1 = full size)."""
    scale = max(1.0, max(src.width, src.height) / max_side)
    shape = (len(indexes), max(1, round(src.height / scale)), max(1, round(src.width / scale)))
    return read(src, indexes, out_shape=shape, resampling=Resampling.nearest), scale


def band_names(src: rasterio.DatasetReader) -> list[str]:
    """Band descriptions where every band has one, else ``B1 … Bn``."""
    if names_described(src):
        return [str(d) for d in src.descriptions]
    return [f"B{i}" for i in range(1, src.count + 1)]


def names_described(src: rasterio.DatasetReader) -> bool:
    """Whether :func:`band_names` are the bands' own descriptions (else numbers)."""
    descriptions = list(src.descriptions)
    return all(descriptions) and len(set(descriptions)) == len(descriptions)


def data_bands(src: rasterio.DatasetReader) -> list[int]:
    """1-based indexes of the bands that hold data: all but alpha bands, which GDAL reads as
    the other bands' mask (``gdalwarp -dstalpha`` writes one); every band of a raster that is
    nothing but alpha."""
    bands = [i for i, c in enumerate(src.colorinterp, 1) if c != ColorInterp.alpha]
    return bands or list(range(1, src.count + 1))


def select_band_indexes(
    path: str | os.PathLike,
    names: Sequence[str],
    wanted: Sequence[str] | None,
    default: Sequence[int] | None = None,
) -> list[int]:
    """Turn a band subset given by names or 1-based numbers into rasterio indexes; without
    one, ``default`` (else every band)."""
    if not wanted:
        return list(default) if default is not None else list(range(1, len(names) + 1))
    indexes = []
    for item in wanted:
        item = str(item).strip()
        if item in names:
            indexes.append(names.index(item) + 1)
        elif item.isdigit() and 1 <= int(item) <= len(names):
            indexes.append(int(item))
        else:
            raise BandError(
                f"{path}: band {item!r} is not in the scene, which has {len(names)} bands "
                f"({', '.join(names)}); pass band names from that list or numbers 1..{len(names)}"
            )
    if len(set(indexes)) != len(indexes):
        raise BandError(f"{path}: the band subset {list(wanted)} names a band twice")
    return indexes


def reads_mask_band(src: rasterio.DatasetReader, indexes: Sequence[int]) -> bool:
    """Whether validity needs GDAL's mask band (alpha or per-dataset mask), not only nodata."""
    flags = [src.mask_flag_enums[i - 1] for i in indexes]
    return any(MaskFlags.per_dataset in f or MaskFlags.alpha in f for f in flags)


def masked_fill(
    src: rasterio.DatasetReader, indexes: Sequence[int], side: int = 1024
) -> tuple[float, ...] | None:
    """What to store in pixels that only GDAL's mask band marks invalid, so that they
    normalise to about 0 (as ``predict`` sets them): the nodata value where there is one, NaN
    for floating-point data, else each band's mean over the valid pixels of the central
    ``side`` × ``side`` window (a few blocks; a shrunk read of the whole scene, which decodes
    every block of a file without overviews, only where that window is all masked), rounded
    into the dtype. None without a mask band."""
    if not reads_mask_band(src, indexes):
        return None
    dtype = np.dtype(src.dtypes[indexes[0] - 1])
    if src.nodata is not None:
        return (float(src.nodata),) * len(indexes)
    if dtype.kind == "f":
        return (float("nan"),) * len(indexes)
    width, height = min(side, src.width), min(side, src.height)
    centre = Window((src.width - width) // 2, (src.height - height) // 2, width, height)
    data, valid = read_valid(src, indexes, centre, None, True)
    if not valid.any():
        data, valid, _ = read_shrunk_valid(src, indexes, side)
    if not valid.any():
        return (0.0,) * len(indexes)
    info = np.iinfo(dtype)
    means = data[:, valid].astype(np.float64).mean(axis=1)
    return tuple(float(np.clip(np.round(m), info.min, info.max)) for m in means)


def valid_mask(
    data: np.ndarray, nodata: float | None, mask: np.ndarray | None = None
) -> np.ndarray:
    """Per-pixel validity of a (C, H, W) stack → (H, W) bool.

    A pixel is invalid where any band equals ``nodata``, is NaN or ±Inf, or where ``mask``
    (GDAL's mask band, 0 = masked) is 0.
    """
    valid = np.ones(data.shape[1:], dtype=bool)
    if nodata is not None and np.isfinite(nodata):
        valid &= ~(data == data.dtype.type(nodata)).any(axis=0)
    if data.dtype.kind == "f":
        valid &= np.isfinite(data).all(axis=0)
    if mask is not None:
        valid &= mask.astype(bool)
    return valid


def read_valid(
    src: rasterio.DatasetReader,
    indexes: Sequence[int],
    window: Window | None,
    nodata: float | None,
    uses_mask: bool,
    fill: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(C, H, W) values of ``indexes`` under ``window`` and their (H, W) validity (nodata,
    NaN and, where ``uses_mask``, GDAL's mask band). With ``fill`` (see :func:`masked_fill`),
    pixels that only the mask marks invalid are set to it, band by band."""
    data = read(src, indexes, window)
    mask = src.dataset_mask(window=window) if uses_mask else None
    valid = valid_mask(data, nodata, mask)
    if fill is not None and mask is not None and not mask.all():
        data[:, mask == 0] = np.array(fill, data.dtype)[:, None]
    return data, valid


def read_shrunk_valid(
    src: rasterio.DatasetReader, indexes: Sequence[int], max_side: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """:func:`read_shrunk` with the validity of the shrunk pixels (nodata, NaN and GDAL's mask
    band read at the same size): (data, valid, shrink factor)."""
    data, scale = read_shrunk(src, indexes, max_side)
    uses_mask = reads_mask_band(src, indexes)
    mask = src.dataset_mask(out_shape=data.shape[1:]) if uses_mask else None
    return data, valid_mask(data, src.nodata, mask), scale


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS, affine transform and size in pixels."""

    crs: CRS
    transform: Affine
    width: int
    height: int

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in the grid's CRS."""
        return rasterio.transform.array_bounds(self.height, self.width, self.transform)


def disjoint(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether two (west, south, east, north) boxes share no area."""
    return a[0] >= b[2] or a[2] <= b[0] or a[1] >= b[3] or a[3] <= b[1]


def read_on_grid(
    src: rasterio.DatasetReader,
    indexes: Sequence[int],
    grid: Grid,
    window: Window,
    dtype: str,
    resampling: Resampling = Resampling.nearest,
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``indexes`` of ``src`` as they fall on ``window`` of ``grid`` → (data, invalid).

    ``data`` is (C, H, W) in ``dtype``, ``invalid`` (C, H, W) bool marks nodata, NaN and
    pixels outside ``src``. A source on the same grid, or on a grid shifted by whole pixels in
    a CRS that maps the grid's points onto themselves (two realisations of one datum), is read
    directly; any other is resampled with ``resampling``.
    """
    offset = grid_offset(src, grid)
    if offset is not None:
        return _read_shifted(src, indexes, window, offset, dtype)
    return _warp_window(src, indexes, grid, window, dtype, resampling)


def grid_offset(src: rasterio.DatasetReader, grid: Grid) -> tuple[int, int] | None:
    """(col, row) of ``grid``'s origin in ``src``'s pixels where both are the same grid up to a
    whole-pixel shift, else None."""
    a, e = src.transform.a, src.transform.e
    if (src.transform.b, src.transform.d, grid.transform.b, grid.transform.d) != (0, 0, 0, 0):
        return None
    if not (
        np.isclose(a, grid.transform.a, rtol=1e-9) and np.isclose(e, grid.transform.e, rtol=1e-9)
    ):
        return None
    if src.crs != grid.crs and not same_coordinates(grid, src.crs):
        return None
    col = (grid.transform.c - src.transform.c) / a
    row = (grid.transform.f - src.transform.f) / e
    if abs(col - round(col)) > 1e-3 or abs(row - round(row)) > 1e-3:
        return None
    return round(col), round(row)


def same_coordinates(grid: Grid, crs) -> bool:
    """Whether ``crs`` gives the corners of ``grid`` the same coordinates (to 1/1000 pixel)."""
    if crs is None or grid.crs is None:
        return crs is None and grid.crs is None
    west, south, east, north = grid.bounds
    xs, ys = [west, east, west, east], [north, north, south, south]
    try:
        tx, ty = transform(grid.crs, crs, xs, ys)
    except RasterioError:
        return False
    tolerance = abs(grid.transform.a) / 1000
    return bool(np.allclose(tx, xs, atol=tolerance) and np.allclose(ty, ys, atol=tolerance))


def _read_shifted(
    src, indexes, window: Window, offset: tuple[int, int], dtype: str
) -> tuple[np.ndarray, np.ndarray]:
    shape = (len(indexes), int(window.height), int(window.width))
    out = np.zeros(shape, dtype=dtype)
    invalid = np.ones(shape, dtype=bool)
    wanted = Window(
        window.col_off + offset[0], window.row_off + offset[1], window.width, window.height
    )
    try:
        inside = wanted.intersection(Window(0, 0, src.width, src.height))
    except WindowError:  # the window lies wholly outside src
        return out, invalid
    data = read(src, indexes, inside, masked=True)
    rows = slice(
        int(inside.row_off - wanted.row_off), int(inside.row_off - wanted.row_off + inside.height)
    )
    cols = slice(
        int(inside.col_off - wanted.col_off), int(inside.col_off - wanted.col_off + inside.width)
    )
    out[:, rows, cols] = data.data
    invalid[:, rows, cols] = np.ma.getmaskarray(data)
    if data.dtype.kind == "f":
        invalid[:, rows, cols] |= np.isnan(data.data)
    return out, invalid


def _warp_window(
    src, indexes: Sequence[int], grid: Grid, window: Window, dtype: str, resampling: Resampling
) -> tuple[np.ndarray, np.ndarray]:
    """Resample the part of ``src`` under ``window`` of ``grid`` → (data, invalid).

    The source window under it (with a margin for the resampling kernel) is read once
    and warped in memory; GDAL's warper reading a JPEG2000 file chunk by chunk would decode
    it many times over.
    """
    window_transform = rasterio.windows.transform(window, grid.transform)
    bounds = rasterio.windows.bounds(window, grid.transform)
    if src.crs != grid.crs:
        bounds = transform_bounds(grid.crs, src.crs, *bounds, densify_pts=21)
    src_window = rasterio.windows.from_bounds(*bounds, transform=src.transform)
    margin = 3  # source pixels around the strip, for the resampling kernel
    col, row = math.floor(src_window.col_off) - margin, math.floor(src_window.row_off) - margin
    src_window = Window(
        col,
        row,
        math.ceil(src_window.col_off + src_window.width) + margin - col,
        math.ceil(src_window.row_off + src_window.height) + margin - row,
    )
    try:
        src_window = src_window.intersection(Window(0, 0, src.width, src.height))
    except WindowError:  # nothing of src under this window
        shape = (len(indexes), int(window.height), int(window.width))
        return np.zeros(shape, dtype=dtype), np.ones(shape, dtype=bool)
    data = read(src, indexes, src_window, masked=True)
    source = np.asarray(data.data, dtype="float64")
    source[np.ma.getmaskarray(data)] = np.nan
    destination = np.full((len(indexes), int(window.height), int(window.width)), np.nan)
    reproject(
        source,
        destination,
        src_transform=rasterio.windows.transform(src_window, src.transform),
        src_crs=src.crs,
        src_nodata=np.nan,
        dst_transform=window_transform,
        dst_crs=grid.crs,
        dst_nodata=np.nan,
        resampling=resampling,
        num_threads=os.cpu_count() or 1,
    )
    invalid = np.isnan(destination)
    if np.dtype(dtype).kind != "f":
        info = np.iinfo(dtype)
        destination = np.clip(np.rint(np.nan_to_num(destination)), info.min, info.max)
    return destination.astype(dtype), invalid


def check_written(path: str | os.PathLike) -> None:
    """Re-open a raster just written and check it is whole: its header reads and, for a
    GeoTIFF, every block of every band lies inside the file (a disk that filled up while GDAL
    flushed its cache at close leaves a file that opens but misses blocks). Raises
    :class:`IncompleteWrite`, which :func:`atomic_output` turns into an error naming the
    output (and the full disk, where that is why)."""
    try:
        with rasterio.open(path) as src:
            whole = src.driver != "GTiff" or _blocks_inside(src, os.path.getsize(path))
    except RasterioError:
        raise IncompleteWrite("it was written but cannot be read back") from None
    if not whole:
        raise IncompleteWrite("it was written incompletely: blocks are missing") from None


def _blocks_inside(src: rasterio.DatasetReader, size: int) -> bool:
    height, width = src.block_shapes[0]
    rows, cols = math.ceil(src.height / height), math.ceil(src.width / width)
    planes = range(1, src.count + 1) if src.interleaving != Interleaving.pixel else [1]
    for band in planes:
        for j in range(rows):
            for i in range(cols):
                offset = src.get_tag_item(f"BLOCK_OFFSET_{i}_{j}", "TIFF", bidx=band)
                length = src.get_tag_item(f"BLOCK_SIZE_{i}_{j}", "TIFF", bidx=band)
                if not offset or not length or int(offset) + int(length) > size:
                    return False
    return True


def geotiff_profile(
    *, width: int, height: int, count: int, dtype: str, crs, transform, nodata: float | None
) -> dict:
    """A tiled, compressed GeoTIFF profile (DEFLATE with the predictor fitting ``dtype``)."""
    blocksize = 512 if min(width, height) >= 512 else 256 if min(width, height) >= 256 else 0
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": dtype,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "compress": "deflate",
        "predictor": 3 if np.dtype(dtype).kind == "f" else 2,
        "BIGTIFF": "IF_SAFER",
        "NUM_THREADS": "ALL_CPUS",  # GDAL compresses blocks in parallel
        "interleave": "pixel" if count <= 4 else "band",
    }
    if blocksize:
        profile.update(tiled=True, blockxsize=blocksize, blockysize=blocksize)
    return profile


def to_cog(path: os.PathLike | str, resampling: str) -> None:
    """Rewrite ``path`` in place as a Cloud-Optimized GeoTIFF with overviews (DEFLATE, 512 px
    blocks), made with ``resampling``: nearest for classes, average for measurements."""
    from pathlib import Path

    path = Path(path)
    cog = path.with_name(path.name + ".cog")
    try:
        rasterio.shutil.copy(
            path,
            cog,
            driver="COG",
            COMPRESS="DEFLATE",
            BLOCKSIZE=512,
            OVERVIEW_RESAMPLING=resampling.upper(),
            BIGTIFF="IF_SAFER",
        )
        os.replace(cog, path)
    finally:
        cog.unlink(missing_ok=True)


def read_decimated(
    path, indexes: Sequence[int] | None = None, side: int = 1024
) -> np.ma.MaskedArray:
    """The bands ``indexes`` (all by default) of ``path``, masked, read decimated to at most
    ``side`` pixels a side: enough for statistics and stretches, as GDAL's approximate ones."""
    with rasterio.open(path) as src:
        step = max(1, -(-max(src.width, src.height) // side))
        count = src.count if indexes is None else len(indexes)
        shape = (count, max(1, src.height // step), max(1, src.width // step))
        return src.read(indexes, out_shape=shape, masked=True)
