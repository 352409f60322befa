"""Patches/s out of the patch store through the Dataset, against raw memory-mapped slicing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset

from ..tiles.format import read_array, read_tiles
from ..training.batch import d4_batch, host_batch, normalise_batch
from ..training.data import EpochSampler, PatchDataset


class RawSlices(Dataset):
    """The bound: copy patch i out of the memory-mapped store, nothing else."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.images = folder, None
        self.count = len(read_array(folder, "images", mmap=True))

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, key):
        index = key[0] if isinstance(key, tuple) else key
        if self.images is None:
            self.images = read_array(self.folder, "images", mmap=True)
        return torch.from_numpy(np.array(self.images[index]).view(np.int16))


def rate(
    dataset: Dataset,
    passes: int,
    workers: int,
    batch_size: int,
    on_batch=None,
    batched: bool = False,
) -> float:
    """Patches/s over ``passes`` epochs (after one warm-up epoch) through a DataLoader; with
    ``batched``, the dataset is asked for whole batches (as training does for raw patches)."""
    sampler = EpochSampler(len(dataset), seed=0)  # type: ignore[arg-type]
    common: dict = {"num_workers": workers, "persistent_workers": workers > 0}
    if batched:
        batches = BatchSampler(sampler, batch_size, drop_last=False)
        loader = DataLoader(dataset, sampler=batches, batch_size=None, **common)
    else:
        loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, **common)
    seen, start = 0, 0.0
    for epoch in range(passes + 1):
        if epoch == 1:
            start = time.perf_counter()
        sampler.set_epoch(epoch)
        for batch in loader:
            if on_batch is not None:
                on_batch(batch)
            if epoch:
                seen += len(batch[0])
    return seen / (time.perf_counter() - start)


def bench_load(
    tiles: Path, *, passes: int = 2, workers: int | None = None, batch_size: int = 16
) -> dict:
    """Raw slicing (the bound), the Dataset without augmentation, with albumentations' D4 in
    the workers, and raw patches normalised and D4-flipped per batch in the main process."""
    workers = os.cpu_count() or 1 if workers is None else workers
    info = read_tiles(tiles)
    mean, std = torch.from_numpy(info.mean), torch.from_numpy(info.std)

    def on_device(batch):
        x = normalise_batch(batch[0], info.dtype, mean, std, info.nodata)
        d4_batch(x, batch[1], batch[2])

    def on_host(batch):
        host_batch(*batch, info.dtype, info.mean, info.std, info.nodata)

    raw = PatchDataset(info, "train", raw=True)
    results = {
        "raw slices": rate(RawSlices(tiles), passes, workers, batch_size),
        "dataset, no augmentation": rate(PatchDataset(info, "train"), passes, workers, batch_size),
        "dataset, d4 in workers (albumentations)": rate(
            PatchDataset(info, "train", "d4"), passes, workers, batch_size
        ),
        # The GPU data path: raw patches, a batch per read of the store, in the training
        # process; normalisation and d4 run per batch on the training device (here on CPU
        # tensors, which is slow on a small CPU).
        "dataset raw, item by item in workers": rate(raw, passes, workers, batch_size),
        "dataset raw batches in workers": rate(raw, passes, workers, batch_size, batched=True),
        "dataset raw batches, main process (the GPU path)": rate(
            raw, passes, 0, batch_size, batched=True
        ),
        "dataset raw batches + normalise and d4 per batch with torch on CPU tensors": rate(
            raw, passes, 0, batch_size, on_device, batched=True
        ),
        # What training on the CPU does with raw batches: one pass per sample, on threads.
        "dataset raw batches + normalise and d4 per sample on host threads": rate(
            raw, passes, 0, batch_size, on_host, batched=True
        ),
    }
    shape = read_array(tiles, "images", mmap=True).shape
    return {"patch": list(shape[1:]), "workers": workers, "patches_per_s": results}
