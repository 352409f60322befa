"""scratchsat where the data already are: predict a ``(band, y, x)`` xarray DataArray lazily,
chunk by chunk, with Dask (``pip install 'scratchsat[xarray]'``).

    import rioxarray, scratchsat.xarray
    scene = rioxarray.open_rasterio("scene.tif", chunks=2048)
    classes = scene.scratchsat.predict("runs/brandenburg")     # lazy, on the scene's grid
    classes.rio.to_raster("classes.tif")                        # or write_prediction(...)

The DataArray follows rioxarray's conventions (a CRS and a regular grid); its bands are
matched to the model's by the ``band`` coordinate's names (strings, as ``odc-stac`` and
``stackstac`` give them), else by the band descriptions rioxarray reads (``long_name``), else
taken in order, with the same checks and errors as ``scratchsat predict`` — before any task
runs. Each chunk of the result is one task that reads its chunk and a halo of at most one
window, predicts the windows of the scene's own window grid that touch it and blends them as
the file predictor does (:mod:`.prediction.blocks`): the class map equals ``scratchsat
predict``'s on the same scene, whatever the chunks. Pixels where any band is NaN or the
DataArray's nodata are nodata; a GDAL mask band is not seen (open with ``masked=True`` or
set such pixels to NaN). A worker loads the model once, from the run's path, which every
worker must be able to read. Chunks much larger than the window waste least work: a chunk
predicts the windows of its halo too.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dask.array
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor this module reads grids with)
import xarray as xr
from dask import delayed

from .bundle import BundleMeta
from .errors import DriftWarning, InputError
from .geo.classmap import CLASS_BAND, class_dtype_and_nodata, classes_tag
from .geo.raster import Grid
from .prediction.blocks import BlockGrid, cached_predictor, predict_block
from .prediction.engine import load_model, match_bands
from .prediction.options import DEFAULTS, PredictOptions
from .prediction.run import check_options
from .prediction.writers import UNCERTAINTY_BANDS, Outputs, uncertainty

DEFAULT_CHUNK = 2048  # rows and columns of a result chunk when the input is not chunked


def predict_dataset(
    run: str | os.PathLike,
    data: xr.DataArray,
    *,
    options: PredictOptions = DEFAULTS,
    chunks: int | tuple[int, int] | None = None,
) -> xr.Dataset:
    """Lazy ``classes`` (y, x), ``probabilities`` (class, y, x; float32, NaN where invalid)
    and ``uncertainty`` (metric, y, x) of ``data`` on its grid, all from one graph (computing
    two of them predicts once). ``chunks``: the result's chunk rows and columns (default: the
    input's chunks, else 2048)."""
    check_options(options)
    _, meta, path = load_model(run, _cpu())
    if meta.task != "segmentation":
        raise InputError(
            f"{path} is a {meta.task} model; the xarray path predicts segmentation models. "
            "Predict it with scratchsat predict (one cell per window)"
        )
    scene = _scene(data, meta)
    height, width = scene.sizes[scene.rio.y_dim], scene.sizes[scene.rio.x_dim]
    grid = BlockGrid.of(height, width, options.patch_size or meta.patch_size, options.overlap)
    nodata = scene.rio.nodata
    pixels = scene.data
    if not isinstance(pixels, dask.array.Array):
        pixels = dask.array.asarray(pixels)
    rows, cols = _chunk_edges(scene, chunks)
    k, bundle = len(meta.classes), str(Path(path).resolve())
    blocks = [
        [
            dask.array.from_delayed(
                delayed(_block, pure=True)(
                    pixels[(slice(None), *grid.region(r, c))], bundle, options, nodata, grid, r, c
                ),
                (k, r[1] - r[0], c[1] - c[0]),
                np.float32,
            )
            for c in cols
        ]
        for r in rows
    ]
    probs = dask.array.block([blocks])
    dtype, class_nodata = class_dtype_and_nodata([c["code"] for c in meta.classes])
    codes = np.array([int(c["code"]) for c in meta.classes], dtype=dtype)
    ids = probs.map_blocks(_codes, codes, class_nodata, dtype=dtype, drop_axis=0)
    unsure = probs.map_blocks(_uncertainty, dtype=np.float32, chunks=((3,), *probs.chunks[1:]))
    y, x = scene.rio.y_dim, scene.rio.x_dim
    space = {y: scene[y], x: scene[x]}
    names = [c["name"] for c in meta.classes]
    dataset = xr.Dataset(
        {
            "classes": xr.DataArray(
                ids, dims=(y, x), coords=space, attrs={"long_name": CLASS_BAND}
            ),
            "probabilities": xr.DataArray(
                probs, dims=("class", y, x), coords={"class": names, **space}
            ),
            "uncertainty": xr.DataArray(
                unsure, dims=("metric", y, x), coords={"metric": list(UNCERTAINTY_BANDS), **space}
            ),
        },
        attrs={"CLASSES": classes_tag(meta.classes), "model": bundle},
    )
    dataset = dataset.rio.write_crs(scene.rio.crs).rio.write_transform(scene.rio.transform())
    dataset["classes"] = dataset["classes"].rio.write_nodata(class_nodata)
    dataset["classes"].attrs["CLASSES"] = dataset.attrs["CLASSES"]
    return dataset


def predict_dataarray(
    run: str | os.PathLike,
    data: xr.DataArray,
    *,
    options: PredictOptions = DEFAULTS,
    chunks: int | tuple[int, int] | None = None,
) -> xr.DataArray:
    """The lazy class map of ``data``: :func:`predict_dataset`'s ``classes``."""
    return predict_dataset(run, data, options=options, chunks=chunks)["classes"]


def write_prediction(
    dataset: xr.Dataset,
    out: str | os.PathLike,
    *,
    probabilities: str | os.PathLike | None = None,
    uncertainty: str | os.PathLike | None = None,
    options: PredictOptions = DEFAULTS,
    overwrite: bool = False,
) -> Path:
    """Write :func:`predict_dataset`'s result as ``scratchsat predict`` writes a scene: the
    class map at ``out`` with its colour table, classes and sidecars (and ``probabilities``,
    ``uncertainty``), COGs with ``options.cog``, each complete and checked before it takes its
    name. Computed a band of chunk rows at a time (two in flight), so memory is two bands of
    rows, whatever the scene's height; the chunks of a band run in parallel on the scheduler
    Dask uses (a ``distributed.Client`` where one is active)."""
    probs = dataset["probabilities"]
    classes = json.loads(dataset.attrs["CLASSES"])
    y, x = dataset.rio.y_dim, dataset.rio.x_dim
    height, width = dataset.sizes[y], dataset.sizes[x]
    grid = Grid(dataset.rio.crs, dataset.rio.transform(), width, height)
    outputs = Outputs(
        Path(out),
        Path(probabilities) if probabilities else None,
        Path(uncertainty) if uncertainty else None,
    )
    import torch

    edges = np.cumsum((0, *probs.data.chunks[1]))
    bands = [probs.data[:, a:b] for a, b in zip(edges[:-1], edges[1:], strict=True)]
    with (
        outputs.staged(classes, height * width, overwrite) as tmp,
        tmp.open(classes, grid, 1, options) as sink,
        ThreadPoolExecutor(2, thread_name_prefix="compute") as pool,
    ):
        pending = [pool.submit(band.compute) for band in bands[:2]]
        for i in range(len(bands)):
            p = pending.pop(0).result()
            if i + 2 < len(bands):
                pending.append(pool.submit(bands[i + 2].compute))
            valid = ~np.isnan(p[0])
            sink.add(torch.from_numpy(np.nan_to_num(p, nan=0.0)), valid)
    return outputs.classes


@xr.register_dataarray_accessor("scratchsat")
class ScratchsatAccessor:
    """``da.scratchsat.predict(run)`` and ``da.scratchsat.predict_dataset(run)``."""

    def __init__(self, data: xr.DataArray) -> None:
        self._data = data

    def predict(self, run: str | os.PathLike, **kwargs) -> xr.DataArray:
        """:func:`predict_dataarray` of this DataArray."""
        return predict_dataarray(run, self._data, **kwargs)

    def predict_dataset(self, run: str | os.PathLike, **kwargs) -> xr.Dataset:
        """:func:`predict_dataset` of this DataArray."""
        return predict_dataset(run, self._data, **kwargs)


def _block(raw, bundle, options, nodata, grid, rows, cols) -> np.ndarray:
    """One chunk's task: on a Dask worker, with the model it loaded once."""
    predictor = cached_predictor(bundle, options)
    return predict_block(predictor, np.asarray(raw), nodata, grid, rows, cols, options.batch_size)


def _codes(probs: np.ndarray, codes: np.ndarray, nodata: int) -> np.ndarray:
    out = codes[np.nan_to_num(probs, nan=0.0).argmax(0)]
    out[np.isnan(probs[0])] = nodata
    return out


def _uncertainty(probs: np.ndarray) -> np.ndarray:
    import torch

    invalid = np.isnan(probs[0])
    out = uncertainty(torch.from_numpy(np.nan_to_num(probs, nan=0.0))).numpy()
    out[:, invalid] = np.nan
    return out


def _scene(data: xr.DataArray, meta: BundleMeta) -> xr.DataArray:
    """``data`` checked (a DataArray with band, y and x dims, a CRS) with its bands in the
    model's order."""
    what = _label(data)
    if not isinstance(data, xr.DataArray):
        raise InputError(
            f"{what} is a {type(data).__name__}, not an xarray DataArray; pass one with "
            "dims (band, y, x) (a Dataset of bands: ds.to_array('band'))"
        )
    try:
        y, x = data.rio.y_dim, data.rio.x_dim
    except Exception:  # rioxarray's MissingSpatialDimensionError
        y = x = None
    other = [d for d in data.dims if d not in (y, x)]
    if y is None or x is None or other != ["band"]:
        raise InputError(
            f"{what} has dims {tuple(data.dims)}; a scene is (band, y, x). Select one time "
            "(da.isel(time=0)) or mosaic, and name the band dimension 'band' "
            "(da.rename(variable='band'))"
        )
    if data.rio.crs is None:
        raise InputError(
            f"{what} has no CRS; write one (da.rio.write_crs('EPSG:32633')) so that the map "
            "lands where the scene lies"
        )
    names = _band_names(data)
    n = data.sizes["band"]
    indexes = match_bands(what, names, range(1, n + 1), n, meta)
    source_dtype = str(data.encoding.get("rasterio_dtype", data.dtype))
    if source_dtype != meta.dtype:
        warnings.warn(
            f"{what} is {source_dtype} but the model was trained on {meta.dtype} data",
            DriftWarning,
            stacklevel=3,
        )
    return data.isel(band=[i - 1 for i in indexes]).transpose("band", y, x)


def _band_names(data: xr.DataArray) -> list[str | None]:
    """The bands' names: the band coordinate's strings, else rioxarray's ``long_name``
    (the files' band descriptions), else none."""
    n = data.sizes["band"]
    values = data["band"].values.tolist() if "band" in data.coords else []
    if values and all(isinstance(v, str) for v in values):
        return values
    long_name = data.attrs.get("long_name")
    if isinstance(long_name, (tuple, list)) and len(long_name) == n:
        return [str(v) if v else None for v in long_name]
    if isinstance(long_name, str) and n == 1:
        return [long_name]
    return [None] * n


def _label(data: object) -> str:
    source = getattr(data, "encoding", {}).get("source")
    name = getattr(data, "name", None)
    return f"the DataArray of {source}" if source else f"the DataArray {name or ''}".strip()


def _chunk_edges(
    scene: xr.DataArray, chunks: int | tuple[int, int] | None
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(start, stop) of the result's chunks along y and x."""
    y, x = scene.rio.y_dim, scene.rio.x_dim
    if chunks is None and scene.chunks is not None:
        sizes: Sequence[Sequence[int]] = (scene.chunksizes[y], scene.chunksizes[x])
    else:
        step = (chunks, chunks) if isinstance(chunks, int) else (chunks or (DEFAULT_CHUNK,) * 2)
        if min(step) < 1:
            raise InputError(f"chunks must be at least 1 pixel, not {chunks}")
        sizes = [
            [min(s, n - a) for a in range(0, n, s)]
            for s, n in zip(step, (scene.sizes[y], scene.sizes[x]), strict=True)
        ]
    edges = []
    for axis in sizes:
        ends = np.cumsum((0, *axis)).tolist()
        edges.append(list(zip(ends[:-1], ends[1:], strict=True)))
    return edges[0], edges[1]


def _cpu():
    import torch

    return torch.device("cpu")
