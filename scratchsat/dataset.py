"""Read a tiles folder for training: checked metadata and a memory-mapped ``PatchDataset``."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from .augment import AugmentSpec, build_augment
from .batch import raw_view
from .errors import DatasetError, InputError
from .index import FORMAT_VERSION
from .labels import IGNORE_INDEX
from .windows import SPLITS

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
    info: dict = field(repr=False)  # the whole dataset.json

    @property
    def in_channels(self) -> int:
        return len(self.bands)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def read_tiles(folder: str | os.PathLike) -> Tiles:
    """Read and check a tiles folder written by ``scratchsat tile``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(
            f"tiles folder {folder} does not exist; make one with `scratchsat tile SCENE "
            f"--labels LABELS --out {folder}`"
        )
    path = folder / "dataset.json"
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


REQUIRED = {  # dataset.json keys training reads, and their JSON types
    "format_version": int,
    "patch_size": int,
    "dtype": str,
    "bands": list,
    "classes": list,
    "patches": int,
    "splits": dict,
}
BAND_KEYS = {"name": str, "mean": (int, float), "std": (int, float)}
CLASS_KEYS = {"id": int, "code": int, "name": str, "colour": str}


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
    entries = [("bands", b, BAND_KEYS) for b in info["bands"]]
    entries += [("classes", c, CLASS_KEYS) for c in info["classes"]]
    for where, entry, keys in entries:
        for key, kind in keys.items():
            if not isinstance(entry, dict) or not isinstance(entry.get(key), kind):
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


def normalise(
    image: np.ndarray, mean: np.ndarray, std: np.ndarray, nodata: float | None
) -> np.ndarray:
    """(C, H, W) raw patch → float32 ``(x - mean) / std`` per band; pixels where any band is
    nodata, NaN or ±Inf become 0 in every band (the mean, so invalid pixels carry no signal)."""
    x = image.astype(np.float32)
    invalid = ~np.isfinite(x).all(axis=0)  # (H, W)
    if nodata is not None and not np.isnan(nodata):
        invalid |= (image == nodata).any(axis=0)
    x -= mean[:, None, None]
    x /= std[:, None, None]
    x[:, invalid] = 0.0
    return x


class PatchDataset(Dataset):
    """Patches of one split as (float32 image (C, P, P), int64 mask (P, P) or class id).

    Images are normalised with the folder's per-band statistics, then augmented. Arrays are
    memory-mapped on first use in each process, so the dataset is cheap to send to
    DataLoader workers. An item may be asked for as ``index`` or ``(index, seed)``; with a seed
    its augmentation is reproducible whatever worker computes it. A list of those asks for a
    whole batch, collated (what a DataLoader with ``batch_size=None`` and a
    :class:`~torch.utils.data.BatchSampler` as its sampler does): raw batches then come from
    one read of the memory-mapped store instead of one per patch plus a stacking copy.
    """

    def __init__(
        self,
        tiles: str | os.PathLike | Tiles,
        split: str | None = "train",
        augment: AugmentSpec = None,
        raw: bool = False,
    ) -> None:
        self.tiles = tiles if isinstance(tiles, Tiles) else read_tiles(tiles)
        self.raw = raw  # items stay raw for batch.normalise_batch/d4_batch on the device
        if raw and augment is not None:
            raise InputError("raw patches are augmented on the device; pass augment=None")
        if split is not None and split not in SPLITS:
            raise InputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        self.split = split
        self.augment = build_augment(augment)
        splits = np.load(self.tiles.folder / "splits.npy")
        if split is None:
            self.indices = np.arange(len(splits))
        else:
            self.indices = np.flatnonzero(splits == SPLITS.index(split))
        self._arrays: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            target = "masks" if self.tiles.task == "segmentation" else "labels"
            folder, names = self.tiles.folder, ("images", target)
            self._arrays = {n: np.load(folder / f"{n}.npy", mmap_mode="r") for n in names}
        return self._arrays

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": None}  # workers map the files themselves

    def targets(self) -> np.ndarray:
        """Class id per patch (classification) or mask per patch (segmentation) of this split."""
        name = "masks" if self.tiles.task == "segmentation" else "labels"
        return np.load(self.tiles.folder / f"{name}.npy", mmap_mode="r")[self.indices]

    def __getitem__(self, key: int | tuple[int, int] | list) -> tuple[torch.Tensor, ...]:
        if isinstance(key, list):
            return self.raw_batch(key) if self.raw else default_collate([self[k] for k in key])
        if self.raw:  # one patch is a batch of one
            images, targets, ks = self.raw_batch([key])
            return images[0], targets[0], int(ks[0])
        index, seed = key if isinstance(key, tuple) else (key, None)
        row = int(self.indices[index])
        arrays, tiles = self.arrays(), self.tiles
        image = normalise(arrays["images"][row], tiles.mean, tiles.std, tiles.nodata)
        if tiles.task == "segmentation":
            mask = np.array(arrays["masks"][row])  # (P, P) uint8, 255 = ignore
            if self.augment is not None:
                image, mask = self.augment(image, mask, seed)
            return torch.from_numpy(image), torch.from_numpy(mask.astype(np.int64))
        if self.augment is not None:
            image, _ = self.augment(image, None, seed)
        return torch.from_numpy(image), torch.tensor(int(arrays["labels"][row]), dtype=torch.int64)

    def raw_batch(self, keys: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw patches as stored (uint16 seen as int16, see ``batch.raw_view``), int64 targets
        and each key's D4 symmetry 0–7 drawn from its seed (0 without one), from one
        fancy-indexed read of the store."""
        pairs = [k if isinstance(k, tuple) else (k, None) for k in keys]
        rows = self.indices[[index for index, _ in pairs]]
        arrays = self.arrays()
        images = torch.from_numpy(raw_view(arrays["images"][rows]))  # (B, C, P, P), one copy
        name = "masks" if self.tiles.task == "segmentation" else "labels"
        targets = torch.from_numpy(arrays[name][rows].astype(np.int64))
        ks = torch.tensor([seed % 8 if seed is not None else 0 for _, seed in pairs])
        return images, targets, ks


__all__ = ["IGNORE_INDEX", "PatchDataset", "Tiles", "normalise", "read_tiles"]


class EpochSampler(torch.utils.data.Sampler):
    """Shuffled ``(index, seed)`` pairs: the order and each item's augmentation seed are drawn
    here, once, from ``seed`` and the epoch, so an epoch replays exactly (on resume too).

    ``start`` skips items already seen (resuming mid-epoch); ``rank`` and ``world_size`` give
    each distributed process its own share, padded to equal length.
    """

    def __init__(self, size: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def items(self) -> list[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        seeds = torch.randint(2**31 - 1, (self.size,), generator=generator).tolist()
        pairs = list(zip(order, seeds, strict=True))
        per_rank = -(-self.size // self.world_size)
        pairs += pairs[: per_rank * self.world_size - self.size]  # pad so ranks stay in step
        return pairs[self.rank :: self.world_size]

    def __iter__(self):
        return iter(self.items()[self.start :])

    def __len__(self) -> int:
        return max(0, -(-self.size // self.world_size) - self.start)
