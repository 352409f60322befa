"""The tiles folder's format, in one place: ``dataset.json`` written (:func:`write_dataset_json`)
and read back, checked against the arrays, into a typed record (:func:`read_tiles`,
:class:`Tiles`). Nothing else opens ``dataset.json``."""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._version import __version__
from ..errors import DatasetError
from ..geo.labels import IGNORE_INDEX, ClassInfo, LabelSpec, build_classes
from ..geo.outputs import write_json
from ..geo.stats import BandStats, stats_step
from ..geo.windows import SPLITS

if TYPE_CHECKING:
    from .options import Scene, TileOptions

FORMAT = "scratchsat-tiles"
FORMAT_VERSION = 1


DATASET_JSON = "dataset.json"


def is_tiles_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a tiles folder (it holds a ``dataset.json``); whether it
    is a sound one is :func:`read_dataset_json`'s to say."""
    return (Path(path) / DATASET_JSON).is_file()


def read_array(folder: str | os.PathLike, name: str, mmap: bool = False) -> np.ndarray:
    """The tiles folder's array ``name`` (images, masks, labels, splits, windows), read or
    memory-mapped: the one place outside the writers that names the arrays' files."""
    return np.load(Path(folder) / f"{name}.npy", mmap_mode="r" if mmap else None)


def has_array(folder: str | os.PathLike, name: str) -> bool:
    """Whether the folder has array ``name`` (a chip folder has no ``windows``)."""
    return (Path(folder) / f"{name}.npy").exists()


def folder_files(folder: str | os.PathLike) -> list[Path]:
    """Every file that makes the tiles folder's data, in a fixed order (what a run hashes)."""
    folder = Path(folder)
    return [folder / DATASET_JSON, *sorted(folder.glob("*.npy"))]


ARRAYS = {  # what training needs (chip folders have no windows.npy: chips have no scene)
    "segmentation": ("images", "masks", "labels", "splits"),
    "classification": ("images", "labels", "splits"),
}


@dataclass(frozen=True)
class Tiles:
    """What ``dataset.json`` says about a tiles folder, checked against its arrays."""

    folder: Path
    task: str
    patch_size: int
    bands: tuple[str, ...]
    mean: np.ndarray  # (C,) float32
    std: np.ndarray  # (C,) float32
    dtype: str
    nodata: float | None
    classes: tuple[dict, ...]
    splits: dict[str, int]
    info: dict = field(repr=False)  # the whole dataset.json (of a union: merged)
    parts: tuple[Tiles, ...] = ()  # the folders of a union, in the order given
    id_maps: tuple[np.ndarray, ...] = field(default=(), repr=False)  # per part: id → union id

    @property
    def folders(self) -> tuple[Path, ...]:
        return tuple(p.folder for p in self.parts) or (self.folder,)

    @property
    def name(self) -> str:
        """The folder, or the folders of a union, for messages."""
        return " + ".join(map(str, self.folders))

    @property
    def in_channels(self) -> int:
        return len(self.bands)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def read_tiles(folder: str | os.PathLike) -> Tiles:
    """Read and check a tiles folder written by ``scratchsat tile``."""
    folder = Path(folder)
    info = read_dataset_json(folder)
    path, task = folder / "dataset.json", info["task"]
    check_arrays(folder, ARRAYS[task], info["patches"])
    check_shapes(folder, info, path)
    bands = info["bands"]
    return Tiles(
        folder=folder,
        task=task,
        patch_size=int(info["patch_size"]),
        bands=tuple(b["name"] for b in bands),
        mean=np.array([b["mean"] for b in bands], np.float32),
        std=np.array([max(b["std"], 1e-6) for b in bands], np.float32),
        dtype=info["dtype"],
        nodata=float("nan") if info.get("nodata_is_nan") else info.get("nodata"),
        classes=tuple(info["classes"]),
        splits=dict(info["splits"]),
        info=info,
    )


def union_tiles(folders: Sequence[str | os.PathLike]) -> Tiles:
    """Several tiles folders (other scenes, days or machines) as one training set.

    The band contract must agree (names, order, dtype, nodata) and so must the task and patch
    size; classes are united by code, and a code or a name used for two different classes is
    refused, naming both folders. Per-band mean and std are merged exactly from each folder's
    recorded pixel count, mean and std (the pooled moments, not recomputed from the patches);
    p2/p98, which feed only display stretches, become the smallest p2 and the largest p98.
    Splits stay as each folder made them; patch rows are numbered folder after folder."""
    parts = [read_tiles(f) for f in folders]
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    for part in parts[1:]:
        check_same_contract(first, part)
    by_code: dict[int, tuple[str, Path]] = {}
    by_name: dict[str, tuple[int, Path]] = {}
    for part in parts:
        for c in part.classes:
            code, name = int(c["code"]), str(c["name"])
            if code in by_code and by_code[code][0] != name:
                raise DatasetError(
                    f"class code {code} is {by_code[code][0]!r} in {by_code[code][1]} but "
                    f"{name!r} in {part.folder}; tile them with the same labels (or the same "
                    "class codes) so every code means one class"
                )
            if name in by_name and by_name[name][0] != code:
                raise DatasetError(
                    f"class {name!r} has code {by_name[name][0]} in {by_name[name][1]} but "
                    f"{code} in {part.folder}; tile them with the same labels (or the same "
                    "class codes) so every class has one code"
                )
            by_code.setdefault(code, (name, part.folder))
            by_name.setdefault(name, (code, part.folder))
    codes = sorted(by_code)
    union = build_classes(codes, [by_code[c][0] for c in codes])
    position = {c: i for i, c in enumerate(codes)}
    id_maps = []
    for part in parts:
        table = np.full(256, IGNORE_INDEX, np.uint8)
        for c in part.classes:
            table[c["id"]] = position[int(c["code"])]
        id_maps.append(table)
    classes = []
    for united in union:
        rows = [pc for part in parts for pc in part.classes if int(pc["code"]) == united.code]
        row = {**asdict(united), "patches": sum(r.get("patches", 0) for r in rows)}
        if first.task == "segmentation":
            row["pixels"] = sum(r.get("pixels", 0) for r in rows)
            row["pixels_by_split"] = {
                s: sum(r["pixels_by_split"].get(s, 0) for r in rows) for s in SPLITS
            }
        classes.append(row)
    bands = merged_bands(parts)
    splits = {s: sum(p.splits.get(s, 0) for p in parts) for s in SPLITS}
    info = {
        **first.info,
        "bands": bands,
        "classes": classes,
        "patches": sum(p.info["patches"] for p in parts),
        "splits": splits,
        "windows": sum(p.info.get("windows", 0) for p in parts),
        "sources": [s for p in parts for s in p.info.get("sources", [])],
        "folders": [str(p.folder) for p in parts],
    }
    return Tiles(
        folder=first.folder,
        task=first.task,
        patch_size=first.patch_size,
        bands=first.bands,
        mean=np.array([b["mean"] for b in bands], np.float32),
        std=np.array([max(b["std"], 1e-6) for b in bands], np.float32),
        dtype=first.dtype,
        nodata=first.nodata,
        classes=tuple(classes),
        splits=splits,
        info=info,
        parts=tuple(parts),
        id_maps=tuple(id_maps),
    )


def check_same_contract(first: Tiles, other: Tiles) -> None:
    """Two folders can train one model: same task, patch size, bands, dtype and nodata."""
    same_nodata = (first.nodata == other.nodata) or (
        isinstance(first.nodata, float)
        and isinstance(other.nodata, float)
        and math.isnan(first.nodata)
        and math.isnan(other.nodata)
    )
    for what, a, b in (
        ("task", first.task, other.task),
        ("patch size", first.patch_size, other.patch_size),
        ("bands", ", ".join(first.bands), ", ".join(other.bands)),
        ("dtype", first.dtype, other.dtype),
        ("nodata", first.nodata, first.nodata if same_nodata else other.nodata),
    ):
        if a != b:
            raise DatasetError(
                f"{other.folder} does not match {first.folder}: {what} {b} there, {a} here; "
                "tiles folders trained together need the same band contract (stack the scenes "
                "with the same bands, tile with the same --patch-size)"
            )


def merged_bands(parts: Sequence[Tiles]) -> list[dict]:
    """Pooled per-band statistics: n = Σ nᵢ, mean = Σ nᵢ·meanᵢ / n,
    var = Σ nᵢ·(stdᵢ² + (meanᵢ − mean)²) / n — exactly the statistics of all pixels at once."""
    missing = [p.folder for p in parts if any("count" not in b for b in p.info["bands"])]
    if missing:
        raise DatasetError(
            f"{missing[0]}/dataset.json does not record how many pixels its band statistics "
            "come from (tiled by an older scratchsat), so they cannot be merged exactly; "
            "tile it again with this version"
        )
    merged = []
    for k, band in enumerate(parts[0].info["bands"]):
        rows = [p.info["bands"][k] for p in parts]
        n = np.array([r["count"] for r in rows], np.float64)
        mean = np.array([r["mean"] for r in rows], np.float64)
        std = np.array([r["std"] for r in rows], np.float64)
        total = n.sum()
        pooled = float((n * mean).sum() / total) if total else 0.0
        var = float((n * (std**2 + (mean - pooled) ** 2)).sum() / total) if total else 0.0
        merged.append(
            {
                **band,
                "mean": pooled,
                "std": math.sqrt(var),
                "p2": min(r.get("p2", math.inf) for r in rows),
                "p98": max(r.get("p98", -math.inf) for r in rows),
                "count": int(total),
            }
        )
    return merged


REQUIRED = {  # dataset.json keys training reads, and their JSON types
    "format_version": int,
    "patch_size": int,
    "dtype": str,
    "bands": list,
    "classes": list,
    "patches": int,
    "splits": dict,
}
BAND_KEYS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "mean": (int, float),
    "std": (int, float),
}
CLASS_KEYS: dict[str, type | tuple[type, ...]] = {
    "id": int,
    "code": int,
    "name": str,
    "colour": str,
}


def check_info(info: dict, path: Path) -> None:
    """The keys and types training relies on; a hand-edited or foreign file is refused with
    what is wrong, before anything is written."""
    fix = "tile again (with --overwrite) rather than editing dataset.json by hand"
    for key, kind in REQUIRED.items():
        if not isinstance(info.get(key), kind) or isinstance(info.get(key), bool):
            found = "missing" if key not in info else f"{type(info[key]).__name__}"
            raise DatasetError(f"{path}: {key!r} must be a {kind.__name__}, found {found}; {fix}")
    if info["format_version"] > FORMAT_VERSION:
        raise DatasetError(
            f"{path} has format_version {info['format_version']}, newer than this scratchsat "
            f"reads ({FORMAT_VERSION}); upgrade scratchsat or tile again with this version"
        )
    entries: list[tuple[str, object, dict[str, type | tuple[type, ...]]]]
    entries = [("bands", b, BAND_KEYS) for b in info["bands"]]
    entries += [("classes", c, CLASS_KEYS) for c in info["classes"]]
    for where, entry, keys in entries:
        for key, expected in keys.items():
            if not isinstance(entry, dict) or not isinstance(entry.get(key), expected):
                raise DatasetError(f"{path}: every entry of {where!r} needs {key!r}; {fix}")
    if not info["bands"] or not info["classes"]:
        raise DatasetError(f"{path}: 'bands' and 'classes' must not be empty; {fix}")
    if [c["id"] for c in info["classes"]] != list(range(len(info["classes"]))):
        raise DatasetError(f"{path}: class ids must be 0, 1, … in order; {fix}")
    if not all(math.isfinite(b["mean"]) and b["std"] >= 0 for b in info["bands"]):
        raise DatasetError(f"{path}: band means must be finite and std not negative; {fix}")
    if info.get("task") == "segmentation" and not all(
        isinstance(c.get("pixels_by_split"), dict) for c in info["classes"]
    ):
        raise DatasetError(f"{path}: every class needs 'pixels_by_split'; {fix}")


def check_shapes(folder: Path, info: dict, path: Path) -> None:
    """The arrays agree with dataset.json: bands, patch size, dtype and class ids."""
    size, bands, k = info["patch_size"], len(info["bands"]), len(info["classes"])
    images = np.load(folder / "images.npy", mmap_mode="r")
    expected = (bands, size, size)
    if images.shape[1:] != expected or images.dtype.name != info["dtype"]:
        raise DatasetError(
            f"{path} describes patches of {bands} bands × {size} × {size} px ({info['dtype']}) "
            f"but images.npy holds {' × '.join(map(str, images.shape[1:]))} "
            f"({images.dtype.name}); the folder is inconsistent, tile again with --overwrite"
        )
    labels = np.load(folder / "labels.npy", mmap_mode="r")
    arrays = [("labels", labels)]
    if (folder / "masks.npy").exists() and info.get("task") == "segmentation":
        masks = np.load(folder / "masks.npy", mmap_mode="r")
        if masks.shape[1:] != (size, size):
            raise DatasetError(f"{folder / 'masks.npy'} does not hold {size} × {size} masks")
        arrays.append(("masks", masks))
    for name, array in arrays:
        top = largest_id(array)
        if top >= k:
            raise DatasetError(
                f"{folder / (name + '.npy')} holds class id {top} but {path} lists {k} classes "
                f"(ids 0..{k - 1}); the folder is inconsistent, tile again with --overwrite"
            )


def largest_id(array: np.ndarray, rows: int = 1024) -> int:
    """The largest class id in a uint8 array of ids (IGNORE_INDEX aside), read in chunks."""
    seen = np.zeros(256, bool)
    for start in range(0, len(array), rows):
        seen |= np.bincount(np.asarray(array[start : start + rows]).ravel(), minlength=256) > 0
    seen[IGNORE_INDEX] = False
    return int(np.flatnonzero(seen).max(initial=-1))


def check_arrays(folder: Path, names: tuple[str, ...], count: int) -> None:
    """Each array exists and has ``count`` rows."""
    for name in names:
        path = folder / f"{name}.npy"
        try:
            rows = len(np.load(path, mmap_mode="r"))
        except FileNotFoundError:
            raise DatasetError(
                f"{folder} is incomplete: {path.name} is missing; run `scratchsat tile` again "
                "with --overwrite"
            ) from None
        except ValueError as exc:
            raise DatasetError(f"{path} is not a readable .npy array ({exc}); tile again") from None
        if rows != count:
            raise DatasetError(
                f"{path} has {rows} rows but dataset.json says {count} patches; the folder is "
                "inconsistent, run `scratchsat tile` again with --overwrite"
            )


def write_dataset_json(
    folder: Path,
    scenes: Sequence[Scene],
    spec: LabelSpec | None,
    classes: Sequence[ClassInfo],
    options: TileOptions,
    stats: BandStats,
    skipped: Counter,
    windows_seen: int,
    splits: np.ndarray,
    labels: np.ndarray,
    counts: np.ndarray,
    block_sides: Sequence[int | None],
) -> None:
    """``dataset.json``: the band contract, statistics, classes, splits and provenance
    (``block_sides``: each scene's split block side in pixels)."""
    first = scenes[0]
    nodata = first.nodata
    data = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "scratchsat_version": __version__,
        "task": options.task,
        "patch_size": options.patch_size,
        "stride": options.stride or options.patch_size,
        "block_size": options.block_size,  # None: sized per scene, as sources[i] says
        "min_valid": options.min_valid,
        "min_labeled": options.min_labeled,
        "seed": options.seed,
        "val_fraction": options.val,
        "test_fraction": options.test,
        "dtype": first.dtype,
        "nodata": None if nodata is None or np.isnan(nodata) else nodata,
        "nodata_is_nan": nodata is not None and bool(np.isnan(nodata)),
        "ignore_index": IGNORE_INDEX,
        "bands": band_rows(first, stats),
        # "descriptions": predict matches a scene's bands by these names; "numbers": B1 … Bn
        # stand for positions, and predict takes a scene's bands in file order.
        "band_names": "descriptions" if first.names_described else "numbers",
        "statistics": "over the valid pixels of every kept patch (all splits) on a lattice of "
        "every statistics_step-th row and column; percentiles "
        + ("exact on that lattice" if stats.hist is not None else "from a sample"),
        "statistics_step": stats_step(options.patch_size),
        "classes": class_rows(classes, splits, labels, counts),
        "patches": int(len(splits)),
        "splits": {name: int((splits == k).sum()) for k, name in enumerate(SPLITS)},
        "windows": windows_seen,
        "skipped": {k: int(v) for k, v in sorted(skipped.items())},
        "arrays": sorted(p.stem for p in folder.glob("*.npy")),
        "sources": [
            {
                "path": str(s.path),
                "crs": s.grid.crs.to_string() if s.grid.crs else None,
                "transform": list(s.grid.transform)[:6],
                "width": s.grid.width,
                "height": s.grid.height,
                "block_size": side,
            }
            for s, side in zip(scenes, block_sides, strict=True)
        ],
        "labels": None
        if spec is None
        else {"path": str(spec.path), "field": spec.field, "background": spec.background},
    }
    write_json(folder / DATASET_JSON, data)


def band_rows(first: Scene, stats: BandStats) -> list[dict]:
    """The band contract: each band's name, index in the scene and statistics."""
    summary = stats.summary()
    return [
        {
            "name": name,
            "index": index,
            "mean": summary["mean"][k],
            "std": summary["std"][k],
            "p2": summary["p2"][k],
            "p98": summary["p98"][k],
            "count": summary["count"][k],  # pixels behind mean and std: folders merge exactly
        }
        for k, (name, index) in enumerate(zip(first.bands, first.band_indexes, strict=True))
    ]


def class_rows(classes, splits: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> list:
    """Each class with its pixels and patches, over all splits and per split."""
    return [
        {
            **asdict(c),
            "pixels": int(counts[:, c.id].sum()),
            "patches": int((labels == c.id).sum()),
            "pixels_by_split": {
                name: int(counts[splits == k, c.id].sum()) for k, name in enumerate(SPLITS)
            },
        }
        for c in classes
    ]


def read_dataset_json(folder: str | os.PathLike) -> dict:
    """The checked ``dataset.json`` of tiles folder ``folder`` (its arrays unread): a missing
    folder, a file given for it, a missing, unreadable or foreign ``dataset.json`` is a
    :class:`DatasetError` that says so."""
    folder = Path(folder)
    if not folder.is_dir():
        what = "is a file, not a tiles folder" if folder.exists() else "does not exist"
        raise DatasetError(
            f"tiles folder {folder} {what}; make one with `scratchsat tile SCENE "
            f"--labels LABELS --out {folder}`"
        )
    path = folder / DATASET_JSON
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(
            f"{folder} has no dataset.json, so it is not a tiles folder (or tiling did not "
            "finish); run `scratchsat tile` again with --overwrite"
        ) from None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path} cannot be read as JSON ({exc}); tile again") from None
    task = info.get("task") if isinstance(info, dict) else None
    if not isinstance(info, dict) or info.get("format") != "scratchsat-tiles" or task not in ARRAYS:
        raise DatasetError(f"{path} is not a scratchsat dataset.json (format or task missing)")
    check_info(info, path)
    return info
