"""Read a tiles folder for training: checked metadata and a memory-mapped ``PatchDataset``."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from ..errors import InputError
from ..geo.labels import IGNORE_INDEX
from ..geo.windows import SPLITS
from ..tiles.format import Tiles, read_array, read_tiles
from .augment import CROP_P, AugmentSpec, build_augment, crop_reflect_maps
from .batch import raw_view


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


class Store:
    """The patch arrays of a tiles folder, or of the folders of a union read as one: rows are
    numbered folder after folder and class ids mapped to the union's. Arrays are
    memory-mapped on first use in each process."""

    def __init__(self, tiles: Tiles) -> None:
        self.parts = tiles.parts or (tiles,)
        self.id_maps = tiles.id_maps or (None,)
        sizes = [int(p.info["patches"]) for p in self.parts]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._arrays: list[dict[str, np.ndarray]] | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": None}  # workers map the files themselves

    def array(self, k: int, name: str) -> np.ndarray:
        if self._arrays is None:
            self._arrays = [{} for _ in self.parts]
        arrays = self._arrays[k]
        if name not in arrays:
            arrays[name] = read_array(self.parts[k].folder, name, mmap=True)
        return arrays[name]

    def splits(self) -> np.ndarray:
        return np.concatenate([read_array(p.folder, "splits") for p in self.parts])

    def read(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Rows of an array (``masks`` and ``labels`` in the union's class ids), one
        fancy-indexed read per folder."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(self.parts) == 1:
            return self.array(0, name)[rows]
        part = np.searchsorted(self.starts, rows, side="right") - 1
        out = None
        for k in np.unique(part):
            chosen = part == k
            block = self.array(int(k), name)[rows[chosen] - self.starts[k]]
            mapping = self.id_maps[k]
            if name in ("masks", "labels") and mapping is not None:
                block = mapping[block]
            if out is None:
                out = np.empty((len(rows), *block.shape[1:]), block.dtype)
            out[chosen] = block
        return out if out is not None else self.array(0, name)[rows]  # no rows


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
        crop: bool = False,
    ) -> None:
        self.tiles = tiles if isinstance(tiles, Tiles) else read_tiles(tiles)
        self.raw = raw  # items stay raw for batch.normalise_batch/d4_batch on the device
        if raw and augment is not None:
            raise InputError("raw patches are augmented on the device; pass augment=None")
        if crop and not raw:
            raise InputError("crop=True is the raw path's d4crop; pass augment='d4crop' instead")
        # d4crop's crop, applied to raw segmentation patches as they are read (it only moves
        # pixels, so before normalisation is as good as after)
        self.crop = crop and self.tiles.task == "segmentation"
        if split is not None and split not in SPLITS:
            raise InputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        self.split = split
        self.augment = build_augment(augment)
        self.store = Store(self.tiles)
        splits = self.store.splits()
        if split is None:
            self.indices = np.arange(len(splits))
        else:
            self.indices = np.flatnonzero(splits == SPLITS.index(split))
        self.target = "masks" if self.tiles.task == "segmentation" else "labels"

    def __len__(self) -> int:
        return len(self.indices)

    def targets(self) -> np.ndarray:
        """Class id per patch (classification) or mask per patch (segmentation) of this split."""
        return self.store.read(self.target, self.indices)

    def __getitem__(self, key: int | tuple[int, int] | list) -> tuple:
        if isinstance(key, list):
            return self.raw_batch(key) if self.raw else default_collate([self[k] for k in key])
        if self.raw:  # one patch is a batch of one
            images, targets, ks = self.raw_batch([key])
            return images[0], targets[0], int(ks[0])
        index, seed = key if isinstance(key, tuple) else (key, None)
        rows, tiles = self.indices[[index]], self.tiles
        image = normalise(self.store.read("images", rows)[0], tiles.mean, tiles.std, tiles.nodata)
        target = np.array(self.store.read(self.target, rows)[0])
        if tiles.task == "segmentation":  # target: (P, P) uint8, 255 = ignore
            if self.augment is not None:
                image, target = self.augment(image, target, seed)
            return torch.from_numpy(image), torch.from_numpy(target.astype(np.int64))
        if self.augment is not None:
            image, _ = self.augment(image, None, seed)
        return torch.from_numpy(image), torch.tensor(int(target), dtype=torch.int64)

    def raw_batch(self, keys: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw patches as stored (uint16 seen as int16, see ``batch.raw_view``), int64 targets
        and each key's D4 symmetry 0–7 drawn from its seed (0 without one), from one
        fancy-indexed read of the store. With ``crop``, a seeded patch is cropped and mirrored
        back out half the time (d4crop; its own draws from the seed) as it is read."""
        pairs = [k if isinstance(k, tuple) else (k, None) for k in keys]
        rows = self.indices[[index for index, _ in pairs]]
        raw = raw_view(self.store.read("images", rows))  # (B, C, P, P)
        target = self.store.read(self.target, rows).astype(np.int64)
        seeded = [(i, seed) for i, (_, seed) in enumerate(pairs) if seed is not None]
        for i, seed in seeded if self.crop else ():
            rng = np.random.default_rng(seed)
            if rng.random() < CROP_P:
                r, c = crop_reflect_maps(rng, *raw.shape[-2:])
                raw[i], target[i] = raw[i][:, r[:, None], c[None, :]], target[i][r[:, None], c]
        images, targets = torch.from_numpy(raw), torch.from_numpy(target)
        ks = torch.tensor([seed % 8 if seed is not None else 0 for _, seed in pairs])
        return images, targets, ks


__all__ = [
    "IGNORE_INDEX",
    "SAMPLINGS",
    "PatchDataset",
    "Tiles",
    "epoch_length",
    "normalise",
    "read_tiles",
]


SAMPLINGS = ("uniform", "balanced")


def patch_weights(dataset: PatchDataset) -> np.ndarray:
    """Drawing weights for ``--sampling balanced`` (repeat-factor sampling, as LVIS does for
    rare categories): a class found in a fraction f of the training patches has the factor
    ``√(f_max / f)``, f_max the fraction of the most widespread class; a patch weighs its
    rarest class's factor. A class in a quarter as many patches as the most widespread one is
    drawn about twice as often; a folder where every class is as widespread is drawn
    uniformly. Sized by the data: nothing here depends on the scene or its sensor."""
    targets = dataset.targets()
    classes = dataset.tiles.num_classes
    if dataset.tiles.task == "segmentation":
        present = np.zeros((len(targets), classes), dtype=bool)
        for start in range(0, len(targets), 256):  # a block of masks at a time
            block = np.asarray(targets[start : start + 256]).reshape(
                min(256, len(targets) - start), -1
            )
            for c in range(classes):
                present[start : start + len(block), c] = (block == c).any(axis=1)
    else:
        present = np.eye(classes, dtype=bool)[np.asarray(targets)]
    fraction = present.mean(axis=0)
    found = fraction > 0
    if not found.any():
        return np.ones(len(targets))
    factor = np.ones(classes)
    factor[found] = np.sqrt(fraction.max() / fraction[found])
    return np.where(present, factor, 1.0).max(axis=1, initial=1.0)


def epoch_length(size: int, batch_size: int, steps: int, world_size: int = 1) -> int:
    """Items an epoch draws: every training patch once, and at least ``steps`` batches for
    each process (``--epoch-steps``, 16 by default), so that a training split of a few
    batches does not make the default 30 epochs a few dozen optimizer steps from random
    weights (README, "A very small task"). A split of that many batches or more is drawn
    once an epoch, as ever."""
    per_step = batch_size * world_size
    full = max(1, size // per_step)  # a pass's steps: full batches only, or one short one
    return size if full >= steps else steps * per_step


class EpochSampler(torch.utils.data.Sampler):
    """Shuffled ``(index, seed)`` pairs: the order and each item's augmentation seed are drawn
    here, once, from ``seed`` and the epoch, so an epoch replays exactly (on resume too).

    An epoch is ``length`` items (at least ``size``): past ``size`` the items are drawn again,
    each pass in its own order, so a small training split still makes an epoch of enough
    optimizer steps (:func:`epoch_length`). With ``weights`` an epoch draws ``length`` items,
    with replacement, in proportion to them (``--sampling balanced``). ``start`` skips items
    already seen (resuming mid-epoch); ``rank`` and ``world_size`` give each distributed
    process its own share, padded to equal length.
    """

    def __init__(
        self,
        size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        weights: np.ndarray | None = None,
        length: int | None = None,
    ) -> None:
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.length = size if length is None else max(size, length)
        self.epoch, self.start = 0, 0
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def items(self) -> list[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.weights is None:
            passes = [torch.randperm(self.size, generator=generator)]
            while len(passes) * self.size < self.length:
                passes.append(torch.randperm(self.size, generator=generator))
            order = torch.cat(passes)[: self.length].tolist()
        else:
            order = torch.multinomial(self.weights, self.length, True, generator=generator).tolist()
        seeds = torch.randint(2**31 - 1, (self.length,), generator=generator).tolist()
        pairs = list(zip(order, seeds, strict=True))
        per_rank = -(-self.length // self.world_size)
        pairs += pairs[: per_rank * self.world_size - self.length]  # pad so ranks stay in step
        return pairs[self.rank :: self.world_size]

    def __iter__(self):
        return iter(self.items()[self.start :])

    def __len__(self) -> int:
        return max(0, -(-self.length // self.world_size) - self.start)
