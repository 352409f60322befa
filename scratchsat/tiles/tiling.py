"""``scratchsat tile``: scenes + labels → a patch store with statistics, splits and an index.

One pass over each scene, one strip of windows at a time: read the strip once (GDAL decodes its
blocks on all cores), bring the labels onto it, keep the windows with enough valid and
labelled pixels, and stream the patches into the store. With one worker, a thread reads strip
k + 1 while strip k is cut and written; with several, each process reads and cuts whole strips.
Splits are then assigned by spatial block, and windows that would overlap a window of another
split are dropped.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections import Counter
from collections.abc import Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from ..errors import BandError, InputError, NoPatchesError, SplitWarning
from ..geo.cluster import check_address, dask_client, in_order
from ..geo.labels import IGNORE_INDEX, ClassInfo, LabelSpec, label_classes, read_ids
from ..geo.outputs import atomic_output, check_output
from ..geo.processes import worker_pool
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
from ..geo.sources import as_source
from ..geo.stats import BandStats, stats_step
from ..geo.windows import (
    SPLITS,
    assign_splits,
    block_ids,
    block_side,
    grid_offsets,
    split_border,
)
from . import store
from .format import write_dataset_json
from .index import write_chips, write_index
from .options import MAX_PATCH, Progress, Scene, Shard, TileOptions


@dataclass
class Strip:
    """What one strip of windows yields: kept patches and counts of skipped windows."""

    images: np.ndarray  # (k, C, P, P)
    masks: np.ndarray  # (k, P, P) uint8 class ids, IGNORE_INDEX = ignore
    xs: np.ndarray  # (k,) column offsets
    ys: np.ndarray  # (k,) row offsets
    class_counts: np.ndarray  # (k, K) pixels per class
    stats: BandStats
    skipped: Counter = field(default_factory=Counter)
    windows: int = 0


def describe_scene(path: str | os.PathLike, bands: Sequence[str] | None) -> Scene:
    with open_raster(path) as src:
        if src.crs is None:
            raise InputError(f"{path}: has no CRS; tile needs a georeferenced scene")
        names = band_names(src)
        indexes = select_band_indexes(path, names, bands, data_bands(src))
        grid = Grid(src.crs, src.transform, src.width, src.height)
        return Scene(
            as_source(path),
            grid,
            tuple(indexes),
            tuple(names[i - 1] for i in indexes),
            src.dtypes[indexes[0] - 1],
            src.nodata,
            reads_mask_band(src, indexes),
            src.block_shapes[indexes[0] - 1][0],
            masked_fill(src, indexes),
            names_described=names_described(src),
        )


@dataclass
class StripData:
    """One strip as read: band data, pixel validity and class ids on the scene grid."""

    rows: tuple[int, ...]  # top edges of the window rows in this strip
    data: np.ndarray  # (C, strip height, W)
    valid: np.ndarray  # (strip height, W) bool
    ids: np.ndarray  # (strip height, W) uint8, IGNORE_INDEX where unlabelled or invalid


def read_strip(
    scene: Scene,
    spec: LabelSpec,
    classes: Sequence[ClassInfo],
    options: TileOptions,
    rows: tuple[int, ...],
) -> StripData:
    """Read the strip under the windows whose top edges are ``rows`` (consecutive window rows,
    read as one strip so each block of the file is decoded once) and its labels."""
    size, top = options.patch_size, rows[0]
    window = Window(0, top, scene.grid.width, rows[-1] + size - top)
    with open_raster(scene.path) as src:
        # Masked pixels would keep whatever the file holds there; scene.fill stores values
        # that normalise to about 0 instead, as predict sets them (raster.masked_fill).
        data, valid = read_valid(  # (C, strip height, W), (strip height, W)
            src, scene.band_indexes, window, scene.nodata, scene.uses_mask, scene.fill
        )
    ids = read_ids(spec, scene.grid, window, classes)
    ids[~valid] = IGNORE_INDEX
    return StripData(rows, data, valid, ids)


class Reused:
    """One array handed out again and again, grown when a caller needs more rows."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def rows(self, count: int, row_shape: tuple[int, ...], dtype) -> np.ndarray:
        a = self.array
        if a is None or len(a) < count or a.shape[1:] != row_shape or a.dtype != dtype:
            self.array = a = np.empty((count, *row_shape), dtype)
        return a[:count]


def cut_strip(
    strip_data: StripData,
    classes: Sequence[ClassInfo],
    options: TileOptions,
    out: Reused | None = None,
) -> Strip:
    """Keep the windows of a strip with enough valid and labelled pixels. Their patches are
    copied into ``out``'s array where it is given (valid until its next use), else a new one."""
    size, stride = options.patch_size, options.stride or options.patch_size
    data, valid, ids, rows = strip_data.data, strip_data.valid, strip_data.ids, strip_data.rows
    top, step = rows[0], stats_step(size)
    xs = grid_offsets(data.shape[2], size, stride)
    strip = Strip(
        np.empty((0, len(data), size, size), data.dtype),
        np.empty((0, size, size), np.uint8),
        np.empty(0, np.int64),
        np.empty(0, np.int64),
        np.empty((0, len(classes)), np.int64),
        BandStats.empty(len(data), data.dtype),
        windows=len(xs) * len(rows),
    )
    # Exact (histogram) statistics are taken once per strip: one histogram per band over the
    # lattices of the wholly valid patches (from the stacked patches) and the valid lattice
    # pixels of the others, not one per band and patch.
    exact = strip.stats.hist is not None
    whole: list[int] = []
    partial: list[np.ndarray] = []
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    kept_xs: list[int] = []
    kept_ys: list[int] = []
    for row in rows:
        rng = np.random.default_rng([options.seed, row])
        r = row - top
        for x in xs:
            patch_valid, patch_ids = (
                valid[r : r + size, x : x + size],
                ids[r : r + size, x : x + size],
            )
            labelled = int(np.count_nonzero(patch_ids != IGNORE_INDEX))
            if np.count_nonzero(patch_valid) < options.min_valid * size**2:
                strip.skipped["nodata"] += 1
                continue
            if labelled == 0 or labelled < options.min_labeled * size**2:
                strip.skipped["unlabeled"] += 1
                continue
            patch = data[:, r : r + size, x : x + size]
            lattice, lattice_valid = patch[:, ::step, ::step], patch_valid[::step, ::step]
            if not exact:  # float data: a seeded sample of each patch for the percentiles
                strip.stats.add(lattice if lattice_valid.all() else lattice[:, lattice_valid], rng)
            elif lattice_valid.all():
                whole.append(len(images))
            else:
                partial.append(lattice[:, lattice_valid])  # (C, n valid)
            images.append(patch)
            masks.append(patch_ids)
            kept_xs.append(x)
            kept_ys.append(row)
    if images:
        target = out.rows(len(images), images[0].shape, data.dtype) if out is not None else None
        strip.images, strip.masks = np.stack(images, out=target), np.stack(masks)
        if whole:
            lattices = strip.images[:, :, ::step, ::step]
            lattices = lattices if len(whole) == len(images) else lattices[whole]
            strip.stats.add(lattices.swapaxes(0, 1))  # (C, k, h, w), a view
        if partial:
            strip.stats.add(np.concatenate(partial, axis=1))
        strip.xs, strip.ys = np.array(kept_xs, np.int64), np.array(kept_ys, np.int64)
        # ids are < 255 (IGNORE_INDEX), so the first len(classes) bins hold every class
        strip.class_counts = np.stack(
            [np.bincount(m.ravel(), minlength=256)[: len(classes)] for m in strip.masks]
        ).astype(np.int64)
    return strip


def tile_strip(
    scene: Scene,
    spec: LabelSpec,
    classes: Sequence[ClassInfo],
    options: TileOptions,
    rows: tuple[int, ...],
) -> Strip:
    """Read and cut one strip; what a worker process runs."""
    return cut_strip(read_strip(scene, spec, classes, options, rows), classes, options)


def _run_strip(args) -> Strip:
    return tile_strip(*args)


def iter_strips(
    tasks: Sequence[tuple], workers: int, dask: str | None = None
) -> Generator[Strip, None, None]:
    """Strips in task order. With ``dask`` (a scheduler's address or ``local:N``), each
    strip is a task of that Dask cluster (:mod:`..geo.cluster`: a dead worker's strip is cut
    again by another); with several ``workers``, each process reads and cuts whole
    strips. With one, a thread reads the next strip (GDAL decodes it on all cores, outside the
    GIL) while this one cuts the current strip into a buffer reused from strip to strip, so a
    Strip's patches are only valid until the next one is asked for."""
    if dask is not None:
        with dask_client(dask) as client:
            yield from in_order(client, tile_strip, tasks)
        return
    if workers > 1:
        with worker_pool(workers) as pool:
            yield from pool.map(_run_strip, tasks, chunksize=1)
        return
    if not tasks:
        return
    buffer = Reused()
    with ThreadPoolExecutor(1, thread_name_prefix="scratchsat-read") as reader:
        pending = reader.submit(read_strip, *tasks[0])
        for k, (_, _, classes, options, _) in enumerate(tasks):
            strip_data = pending.result()
            if k + 1 < len(tasks):
                pending = reader.submit(read_strip, *tasks[k + 1])
            yield cut_strip(strip_data, classes, options, buffer)


def tile(
    scenes: Sequence[str | os.PathLike],
    labels: str | os.PathLike | None,
    out: str | os.PathLike | None = None,
    *,
    label_field: str | None = None,
    background: str | None = None,
    options: TileOptions | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    dry_run: bool = False,
    shard: Shard | None = None,
    dask: str | None = None,
):
    """Cut ``scenes`` and their ``labels`` into a patch store at ``out`` (default
    ``tiles/<first scene's name>``); returns the folder. With ``dry_run`` nothing is written:
    the scenes and labels are read as for real and a summary is returned (windows considered,
    kept and skipped by reason, patches per split and class, the store's size).

    With a ``shard`` (or under a launcher that sets RANK and WORLD_SIZE) only this shard's
    scenes (:meth:`Shard.deal`) are tiled, into ``out/shard-K-of-N``; ``train`` takes the N
    folders together. Splits are drawn per scene (see :func:`_assign`), so each scene's
    patches and splits are those a single run over all scenes gives it. With ``dask`` (a
    scheduler's address, or ``local:N``), the scenes' strips are read and cut by the workers
    of that Dask cluster and written here, in order: the same folder as without it."""
    options = options or TileOptions()
    options.check()
    if dask is not None:
        check_address(dask, options.workers, "strips")
    if not scenes:
        raise InputError("tile needs at least one scene")
    shard = shard or Shard.from_env()
    first = min(map(str, scenes)) if shard else scenes[0]  # the same on every shard
    out = Path(out) if out else Path("tiles") / as_source(first).stem
    if shard is not None:
        if labels is None:
            raise InputError("--shard needs --labels (a chip folder is one input)")
        scenes = shard.deal([str(s) for s in scenes])
        out = out / shard.folder
        if not dry_run:
            out.parent.mkdir(parents=True, exist_ok=True)
    if not dry_run:
        check_output(out, overwrite)
    if labels is None:
        if dry_run:
            raise InputError("--dry-run needs --labels (chip folders are counted by listing)")
        if len(scenes) == 1 and as_source(scenes[0]).is_dir():
            from .chipfolder import tile_chip_folder

            return tile_chip_folder(Path(scenes[0]), out, options, overwrite, progress)
        raise InputError(
            "tile needs --labels (a label raster or vector file), or a folder of "
            "class folders of chips (CLASS/*.tif) as its only input"
        )
    infos = [describe_scene(p, options.bands) for p in scenes]
    _check_same_bands(infos)
    spec = LabelSpec(as_source(labels), label_field, background)
    classes = label_classes(spec, [s.grid for s in infos])
    for info in infos:
        if min(info.grid.width, info.grid.height) < options.patch_size:
            raise InputError(
                f"{info.path} is {info.grid.width} × {info.grid.height} px, smaller than "
                f"--patch-size {options.patch_size}; pass a patch size of at most "
                f"{min(info.grid.width, info.grid.height)} px, or a larger scene"
            )
    if options.patch_size > MAX_PATCH:  # after the scenes: a patch larger than one says so
        raise InputError(
            f"--patch-size must be from 4 to {MAX_PATCH} px, got {options.patch_size}; "
            "patches of 32 to 256 px are usual"
        )
    if dry_run:
        summary = _write_store(None, infos, spec, classes, options, progress, dask)
        return {**(summary or {}), "out": str(out)}
    with atomic_output(out, overwrite) as tmp:
        tmp.mkdir()
        _write_store(tmp, infos, spec, classes, options, progress, dask)
    return out


class _Rows:
    """Counts the rows a store would get (``tile --dry-run``)."""

    def __init__(self, dtype, row_shape: tuple[int, ...]) -> None:
        self.count, self.row_bytes = 0, int(np.dtype(dtype).itemsize * np.prod(row_shape))

    def append(self, rows: np.ndarray) -> None:
        self.count += len(rows)

    def close(self) -> None:
        pass


def _check_same_bands(infos: Sequence[Scene]) -> None:
    first = infos[0]
    for info in infos[1:]:
        if info.bands != first.bands or info.dtype != first.dtype:
            raise BandError(
                f"{info.path} has bands {', '.join(info.bands)} ({info.dtype}) but "
                f"{first.path} has {', '.join(first.bands)} ({first.dtype}); scenes tiled "
                "together need the same bands in the same order"
            )


def _strip_tasks(infos, spec, classes, options: TileOptions) -> tuple[list, list[int]]:
    """The tiler's tasks (a few window rows of one scene, sharing its file blocks) and the
    scene of each."""
    size, stride = options.patch_size, options.stride or options.patch_size
    tasks, scene_of_task = [], []
    for index, info in enumerate(infos):
        rows = grid_offsets(info.grid.height, size, stride).tolist()
        per_task = max(1, info.block_height // stride)  # window rows sharing file blocks
        for k in range(0, len(rows), per_task):
            tasks.append((info, spec, classes, options, tuple(rows[k : k + per_task])))
            scene_of_task.append(index)
    return tasks, scene_of_task


def _no_patches(total: int, skipped: Counter, options: TileOptions) -> NoPatchesError:
    reasons = ", ".join(f"{n} {why}" for why, n in sorted(skipped.items()))
    size = options.patch_size
    return NoPatchesError(
        f"all {total} windows of {size}×{size} px were skipped ({reasons}); lower "
        f"--min-valid (now {options.min_valid}) or --min-labeled (now "
        f"{options.min_labeled}), use a smaller --patch-size, or check that the labels "
        "cover valid pixels of the scene"
    )


def _write_store(
    folder: Path | None,
    infos: Sequence[Scene],
    spec: LabelSpec,
    classes: Sequence[ClassInfo],
    options: TileOptions,
    progress: Progress | None,
    dask: str | None = None,
) -> dict | None:
    size = options.patch_size
    tasks, scene_of_task = _strip_tasks(infos, spec, classes, options)
    bands = len(infos[0].bands)
    images: store.NpyWriter | _Rows
    masks: store.NpyWriter | _Rows
    if folder is None:  # a dry run
        images, masks = _Rows(infos[0].dtype, (bands, size, size)), _Rows(np.uint8, (size, size))
    else:
        images = store.NpyWriter(folder / "images.npy", infos[0].dtype, (bands, size, size))
        masks = store.NpyWriter(folder / "masks.npy", np.uint8, (size, size))
    stats, skipped = BandStats.empty(bands, infos[0].dtype), Counter[str]()
    windows, counts, total = [], [], 0
    # closing: an exception here (Ctrl-C) must stop the workers now, not at garbage collection
    try:
        with contextlib.closing(iter_strips(tasks, options.workers, dask)) as strips:
            for done, (strip, scene) in enumerate(zip(strips, scene_of_task, strict=True), 1):
                images.append(strip.images)
                masks.append(strip.masks)
                stats.update(strip.stats)
                skipped.update(strip.skipped)
                total += strip.windows
                windows.append(np.stack([np.full(len(strip.xs), scene), strip.xs, strip.ys], 1))
                counts.append(strip.class_counts)
                if progress:
                    progress(done, len(tasks))
    finally:
        images.close()
        masks.close()
    windows_arr = np.concatenate(windows).reshape(-1, 3)
    if not len(windows_arr):
        raise _no_patches(total, skipped, options)
    counts_arr = np.concatenate(counts)
    splits, sides = _assign(windows_arr, counts_arr, options)
    keep = splits != 255
    skipped["split_border"] = int((~keep).sum())
    _warn_empty_splits(splits[keep], counts_arr[keep], classes, sides, options)
    if folder is None:
        return _dry_summary(
            images, masks, total, skipped, splits, keep, counts_arr, classes, options
        )
    for name in ("images", "masks"):
        store.keep_rows(folder / f"{name}.npy", keep)
    windows_arr, counts_arr, splits = windows_arr[keep], counts_arr[keep], splits[keep]
    labels = counts_arr.argmax(axis=1).astype(np.uint8)  # majority class; ties → lowest id
    np.save(folder / "windows.npy", windows_arr)
    np.save(folder / "splits.npy", splits)
    np.save(folder / "labels.npy", labels)
    if options.task == "classification":
        (folder / "masks.npy").unlink()
    write_index(
        folder / "index.geojson", infos, windows_arr, splits, labels, counts_arr, classes, size
    )
    if options.chips:
        write_chips(folder, infos, windows_arr, size, options.task)
    write_dataset_json(
        folder,
        infos,
        spec,
        classes,
        options,
        stats,
        skipped,
        total,
        splits,
        labels,
        counts_arr,
        sides,
    )
    return None


def _warn_empty_splits(
    splits: np.ndarray,
    class_pixels: np.ndarray,
    classes: Sequence[ClassInfo],
    sides: list[int],
    options: TileOptions,
) -> None:
    """A split asked for (a fraction above 0) that got no patch, or lacks a class that the
    folder holds: splits are drawn by blocks, and with few blocks a small fraction rounds to
    none; a class found in fewer than three blocks cannot be in all three splits. Train needs
    validation patches, evaluate --split test needs test patches, and a class missing from
    validation is never validated; so say it now, at the cause."""
    blocks = "/".join(str(b) for b in sorted(set(sides)))
    for code, option, fraction in ((1, "--val", options.val), (2, "--test", options.test)):
        if fraction <= 0:
            continue
        if not (splits == code).any():
            warnings.warn(
                f"the {SPLITS[code]} split got no patches although {option} {fraction} asked "
                f"for some: the splits are drawn by {blocks} px blocks "
                f"({len(splits)} patches kept), too few for that fraction; tile again with a "
                "smaller --block-size",
                SplitWarning,
                stacklevel=3,
            )
            continue
        here = class_pixels[splits == code].sum(0)
        missing = [
            f"{c.name} ({int(class_pixels[:, i].sum()):,} px)"
            for i, c in enumerate(classes)
            if here[i] == 0 and class_pixels[:, i].any()
        ]
        if missing:
            warnings.warn(
                f"the {SPLITS[code]} split holds no pixel of {', '.join(missing)}: "
                f"{'their' if len(missing) > 1 else 'its'} pixels lie in too few of the "
                f"{blocks} px split blocks (a class needs three in a scene, one per split, "
                "each no larger than about a split's share); label more of it, or tile "
                "again with a smaller --block-size",
                SplitWarning,
                stacklevel=3,
            )


def _assign(
    windows: np.ndarray, class_pixels: np.ndarray, options: TileOptions
) -> tuple[np.ndarray, list[int]]:
    """Split code per window (255 = dropped at a split border), and each scene's block side.

    Each scene on its own: its block grid is anchored at its top-left pixel, its block side is
    ``--block-size`` or else sized by its own windows (:func:`windows.block_side`), and its
    blocks are shuffled with ``--seed`` alone, stratified by class and filled to the val/test
    fractions (:func:`windows.assign_splits`). A scene's splits therefore do not depend on the
    other scenes tiled with it, their order or the machine — shards agree with a single run.
    """
    scene, xs, ys = windows[:, 0], windows[:, 1], windows[:, 2]
    centre = options.patch_size // 2
    splits = np.zeros(len(windows), np.uint8)
    sides = []
    for s in np.unique(scene):
        here = np.flatnonzero(scene == s)
        side = options.block_size or block_side(xs[here], ys[here], options.patch_size)
        ids = block_ids(xs[here], ys[here], centre, side)
        splits[here] = assign_splits(
            ids, options.val, options.test, options.seed, class_pixels[here]
        )
        drop = split_border(xs[here], ys[here], splits[here], options.patch_size)
        splits[here[drop]] = 255
        sides.append(side)
    return splits, sides


def _dry_summary(images, masks, total, skipped, splits, keep, counts, classes, options) -> dict:
    """What ``tile`` would write: windows, skips by reason, patches per split and class."""
    kept_splits, kept_counts = splits[keep], counts[keep]
    labels = kept_counts.argmax(axis=1) if len(kept_counts) else np.zeros(0, int)
    patches = int(keep.sum())
    size = patches * images.row_bytes
    if options.task == "segmentation":
        size += patches * masks.row_bytes
    return {
        "dry_run": True,
        "windows": int(total),
        "patches": patches,
        "skipped": {k: int(v) for k, v in sorted(skipped.items())},
        "splits": {name: int((kept_splits == i).sum()) for i, name in enumerate(SPLITS)},
        "classes": [
            {
                "code": c.code,
                "name": c.name,
                "pixels": int(kept_counts[:, i].sum()),
                "patches": int((kept_counts[:, i] > 0).sum()),
                "majority_patches": int((labels == i).sum()),
            }
            for i, c in enumerate(classes)
        ],
        "store_bytes": int(size),
    }
