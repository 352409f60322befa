"""Tile throughput against the bound of the same file, measured in the same run.

The bound is one plain full read of the scene with GDAL's decoding threads on (all cores); the
tiler's rate is MB/s of raw band data (width × height × bands × bytes per sample) from the
start of ``tile`` to a finished folder. Without a scene, a synthetic 13-band uint16 scene
(DEFLATE, 512 px blocks) is written first.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

from ..extras.synth import write_scene
from ..geo.raster import GDAL_ENV, geotiff_profile, open_raster
from ..tiles.format import read_array
from ..tiles.tiling import TileOptions, tile


def describe(path: Path) -> dict:
    """Size, bands, dtype and megabytes of raw band data of a scene."""
    with open_raster(path) as src:
        itemsize = np.dtype(src.dtypes[0]).itemsize
        return {
            "size": [src.width, src.height],
            "bands": src.count,
            "dtype": src.dtypes[0],
            "megabytes": src.width * src.height * src.count * itemsize / 1e6,
        }


def best_full_read(path: Path, repeats: int = 3) -> float:
    """Seconds of the fastest of ``repeats`` full reads with GDAL's decoding threads on."""
    best = float("inf")
    for _ in range(repeats):
        with rasterio.Env(**GDAL_ENV), rasterio.open(path) as src:
            start = time.perf_counter()
            src.read()
            best = min(best, time.perf_counter() - start)
    return best


def constant_labels(scene: Path, out: Path) -> Path:
    """A label raster of one class on the scene's grid, for scenes that come without labels."""
    with rasterio.open(scene) as src:
        profile = geotiff_profile(
            width=src.width,
            height=src.height,
            count=1,
            dtype="uint8",
            crs=src.crs,
            transform=src.transform,
            nodata=None,
        )
    with rasterio.open(out, "w", **profile) as dst:
        for _, window in dst.block_windows(1):
            dst.write(np.ones((int(window.height), int(window.width)), np.uint8), 1, window=window)
    return out


def bench_tile(
    scene: Path | None = None,
    labels: Path | None = None,
    *,
    patch_size: int = 256,
    workers: int | None = None,
    size: int = 2048,
    repeats: int = 2,
    keep: Path | None = None,
) -> dict:
    """Measure tile MB/s against the full-read bound; returns the figures. With ``keep``, the
    scene, labels and the last tiles folder are copied there for the other benchmarks."""
    workers = workers or 1
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if scene is None:
            made = write_scene(
                tmp / "scene.tif", tmp / "labels.tif", width=size, height=size, count=13, seed=0
            )
            _retile(made.path, tmp / "scene512.tif")
            scene, labels = tmp / "scene512.tif", made.labels_path
        labels = labels or constant_labels(scene, tmp / "labels.tif")
        facts = describe(scene)
        megabytes = facts["megabytes"]
        read_s = best_full_read(scene)
        tile_s = float("inf")
        for k in range(repeats):
            start = time.perf_counter()
            out = tile(
                [scene],
                labels,
                tmp / f"tiles{k}",
                options=TileOptions(patch_size=patch_size, workers=workers, min_valid=0.0),
            )
            tile_s = min(tile_s, time.perf_counter() - start)
        patches = len(read_array(out, "splits"))
        if keep is not None:
            shutil.copytree(out, keep / "tiles", dirs_exist_ok=True)
            shutil.copy(scene, keep / "scene.tif")
    return {
        "scene": str(scene),
        **facts,
        "patch_size": patch_size,
        "patches": patches,
        "workers": workers,
        "read_mb_s": megabytes / read_s,
        "tile_mb_s": megabytes / tile_s,
        "tile_patches_s": patches / tile_s,
        "ratio": read_s / tile_s,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }


def _retile(src_path: Path, dst_path: Path) -> None:
    with rasterio.open(src_path) as src:
        profile = {
            **src.profile,
            "tiled": True,
            "blockxsize": 512,
            "blockysize": 512,
            "compress": "deflate",
            "predictor": 2,
        }
        with rasterio.open(dst_path, "w", **profile) as dst:
            dst.write(src.read())
            dst.descriptions = src.descriptions
