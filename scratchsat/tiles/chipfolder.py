"""A folder-per-class chip dataset (EuroSAT's layout, ``CLASS/*.tif``) → the patch store.

Every chip becomes one classification patch. Chips have no spatial neighbours, so the split is
random per class (stratified) with the seed; ``index.geojson`` holds each chip's footprint in
WGS 84 (chips may come from many UTM zones).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from rasterio.warp import transform_geom

from ..errors import InputError
from ..geo.labels import LabelSpec, build_classes
from ..geo.outputs import atomic_output, write_json
from ..geo.raster import (
    Grid,
    band_names,
    data_bands,
    masked_fill,
    names_described,
    open_raster,
    read_valid,
    reads_mask_band,
    select_band_indexes,
)
from ..geo.stats import BandStats, stats_step
from ..geo.windows import SPLITS
from . import store
from .format import write_dataset_json
from .index import footprint
from .options import Progress, Scene, TileOptions

CHIP_SUFFIXES = {".tif", ".tiff"}


def find_chips(folder: Path) -> dict[str, list[Path]]:
    """Chips by class name (sorted), from the class sub-folders of ``folder``."""
    found = {
        d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in CHIP_SUFFIXES)
        for d in sorted(folder.iterdir())
        if d.is_dir()
    }
    found = {name: paths for name, paths in found.items() if paths}
    if not found:
        raise InputError(
            f"{folder}: no class folders with .tif chips (expected "
            f"{folder}/CLASS/*.tif, EuroSAT's layout)"
        )
    return found


def tile_chip_folder(
    folder: Path, out: Path, options: TileOptions, overwrite: bool, progress: Progress | None
) -> Path:
    """Convert ``folder`` into a classification patch store at ``out``."""
    if options.task != "classification":
        raise InputError(
            f"{folder} is a folder of class chips, which only suits --task classification"
        )
    chips = find_chips(folder)
    classes = build_classes(list(range(1, len(chips) + 1)), list(chips))
    items = [(path, k) for k, paths in enumerate(chips.values()) for path in paths]
    with atomic_output(out, overwrite) as tmp:
        tmp.mkdir()
        _write(tmp, folder, items, classes, options, progress)
    return out


def _write(tmp: Path, folder: Path, items, classes, options: TileOptions, progress) -> None:
    first = _scene(items[0][0], options)
    size = first.grid.width
    options = TileOptions(**{**options.__dict__, "patch_size": size, "stride": size})
    step = stats_step(size)
    images = store.NpyWriter(tmp / "images.npy", first.dtype, (len(first.bands), size, size))
    stats, skipped = BandStats.empty(len(first.bands), first.dtype), Counter[str]()
    labels, features, rng = [], [], np.random.default_rng(options.seed)
    try:
        for done, (path, class_id) in enumerate(items, 1):
            scene = _scene(path, options)
            _check_like(scene, first)
            with open_raster(path) as src:
                fill = masked_fill(src, scene.band_indexes)  # as tile does; None without a mask
                data, valid = read_valid(
                    src, scene.band_indexes, None, scene.nodata, scene.uses_mask, fill
                )
            if valid.mean() < options.min_valid:
                skipped["nodata"] += 1
                continue
            lattice = data[:, ::step, ::step]  # as tile feeds its patches (stats_step)
            stats.add(lattice[:, valid[::step, ::step]], rng)
            images.append(data[None])
            labels.append(class_id)
            geometry = footprint(scene.grid.transform, 0, 0, size)
            features.append(
                (
                    transform_geom(scene.grid.crs, "EPSG:4326", geometry)
                    if scene.grid.crs
                    else None,
                    path,
                )
            )
            if progress:
                progress(done, len(items))
    finally:
        images.close()
    label_arr = np.array(labels, dtype=np.uint8)
    splits = _stratified_splits(label_arr, options)
    counts = np.zeros((len(label_arr), len(classes)), dtype=np.int64)
    counts[np.arange(len(label_arr)), label_arr] = size * size
    np.save(tmp / "labels.npy", label_arr)
    np.save(tmp / "splits.npy", splits)
    write_json(
        tmp / "index.geojson",
        {
            "type": "FeatureCollection",
            "name": "patches",
            "features": [
                {
                    "type": "Feature",
                    "id": i,
                    "geometry": geometry,
                    "properties": {
                        "id": i,
                        "split": SPLITS[splits[i]],
                        "scene": str(path.relative_to(folder)),
                        "class": classes[label_arr[i]].name,
                    },
                }
                for i, (geometry, path) in enumerate(features)
            ],
        },
    )
    write_dataset_json(
        tmp,
        [first],
        LabelSpec(folder),
        classes,
        options,
        stats,
        skipped,
        len(items),
        splits,
        label_arr,
        counts,
        [None],  # chips are split one by one, stratified by class: no blocks
    )


def _scene(path: Path, options: TileOptions) -> Scene:
    with open_raster(path) as src:
        names = band_names(src)
        indexes = select_band_indexes(path, names, options.bands, data_bands(src))
        if src.width != src.height:
            raise InputError(f"{path}: chips must be square, found {src.width}×{src.height}")
        return Scene(
            path,
            Grid(src.crs, src.transform, src.width, src.height),
            tuple(indexes),
            tuple(names[i - 1] for i in indexes),
            src.dtypes[indexes[0] - 1],
            src.nodata,
            reads_mask_band(src, indexes),
            names_described=names_described(src),
        )


def _check_like(scene: Scene, first: Scene) -> None:
    if (scene.grid.width, len(scene.bands), scene.dtype) != (
        first.grid.width,
        len(first.bands),
        first.dtype,
    ):
        raise InputError(
            f"{scene.path}: {scene.grid.width}×{scene.grid.width} px, {len(scene.bands)} bands, "
            f"{scene.dtype}, but {first.path} is {first.grid.width}×{first.grid.width} px, "
            f"{len(first.bands)} bands, {first.dtype}; every chip needs the same size, band "
            "count and dtype"
        )


def _stratified_splits(labels: np.ndarray, options: TileOptions) -> np.ndarray:
    """Random split per class: ``val`` and ``test`` fractions of each class's chips."""
    rng = np.random.default_rng(options.seed)
    splits = np.zeros(len(labels), dtype=np.uint8)
    for class_id in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == class_id))
        n_val = round(options.val * len(members))
        n_test = round(options.test * len(members))
        splits[members[:n_val]] = 1
        splits[members[n_val : n_val + n_test]] = 2
    return splits
