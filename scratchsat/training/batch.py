"""Batch-level work on the training device: normalisation and the exact D4 group per sample.

With ``d4`` (or no) augmentation, the host only reads raw batches out of the memory-mapped
store (one fancy-indexed read per batch); turning them into normalised float32 and
flipping/rotating them happens here, on whole batches, where it is cheap (on a GPU, nearly
free). Nothing here synchronises with the host: the per-sample symmetries arrive on the CPU
with the batch and are grouped there. When the training device is the CPU, :func:`host_batch`
does the same work in one pass per sample, on threads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..models.inputs import d4, standardise


def raw_view(patch: np.ndarray) -> np.ndarray:
    """uint16 → int16 without a copy (torch collates int16 but not uint16); see
    :func:`to_float`, which undoes it on the device."""
    return patch.view(np.int16) if patch.dtype == np.uint16 else patch


def to_float(raw: torch.Tensor, dtype: str) -> torch.Tensor:
    """Raw batch (as collated) → float32 values of the store's ``dtype``."""
    if dtype == "uint16":
        return (raw.to(torch.int32) & 0xFFFF).to(torch.float32)
    return raw.to(torch.float32)


def normalise_batch(
    raw: torch.Tensor, dtype: str, mean: torch.Tensor, std: torch.Tensor, nodata: float | None
) -> torch.Tensor:
    """(N, C, H, W) raw → ``(x - mean) / std`` per band; 0 in every band where any band is
    nodata, NaN or ±Inf (as :func:`scratchsat.dataset.normalise` does for one patch)."""
    x = to_float(raw, dtype)
    invalid = ~torch.isfinite(x).all(dim=1, keepdim=True)  # (N, 1, H, W)
    if nodata is not None and not np.isnan(nodata):
        invalid |= (x == nodata).any(dim=1, keepdim=True)
    return standardise(x, mean, std, invalid)


def d4_batch(
    x: torch.Tensor, y: torch.Tensor | None, ks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply symmetry ``ks[i]`` to sample i of (N, C, H, W) ``x`` and (N, H, W) ``y``.

    ``ks`` is a CPU tensor: samples are grouped by symmetry on the host, so the device only
    sees 8 (or fewer) gathers and scatters per batch.
    """
    x_out = torch.empty_like(x)
    y_out = torch.empty_like(y) if y is not None and y.dim() == 3 else y
    for k in range(8):
        rows = torch.nonzero(ks == k).flatten()
        if not len(rows):
            continue
        rows = rows.to(x.device, non_blocking=True)
        x_out[rows] = d4(x[rows], k)
        if y is not None and y_out is not None and y_out is not y:
            y_out[rows] = d4(y[rows], k)
    return x_out, y_out


def symmetry(a: np.ndarray, k: int) -> np.ndarray:
    """numpy twin of :func:`d4`, as a view: rotate the last two axes by k % 4 quarter turns,
    then mirror when k ≥ 4."""
    a = np.rot90(a, k % 4, axes=(-2, -1)) if k % 4 else a
    return a[..., ::-1] if k >= 4 else a


def host_batch(
    raw: torch.Tensor,
    y: torch.Tensor,
    ks: torch.Tensor | None,
    dtype: str,
    mean: np.ndarray,
    std: np.ndarray,
    nodata: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """What :func:`normalise_batch` then :func:`d4_batch` (with ``ks``; none without) give, for
    a batch that stays on the CPU. Each sample is normalised band by band in its stored layout
    (``(x - mean) / std`` in float32, 0 where any band is nodata or NaN; a band stays in cache
    between the passes) and copied turned by its D4 symmetry, on as many threads as torch uses
    (numpy lets go of the GIL inside its loops). The torch version makes several passes over
    the whole batch, which a GPU does not notice and a CPU does."""
    images = raw.numpy().view(np.uint16) if dtype == "uint16" else raw.numpy()
    targets = y.numpy()
    out = np.empty(images.shape, np.float32)
    moved = np.empty_like(targets) if ks is not None and targets.ndim == 3 else targets
    shift = mean.astype(np.float32)[:, None, None]
    scale = (1 / std).astype(np.float32)[:, None, None]
    check_nodata = nodata is not None and not np.isnan(nodata)
    blank = images.dtype.type(nodata) if check_nodata and nodata is not None else None
    floats = images.dtype.kind == "f"

    def one(i: int) -> None:
        k = int(ks[i]) if ks is not None else 0
        image, x = images[i], out[i]
        plane = np.empty(image.shape[1:], np.float32) if k else None
        invalid = np.zeros(image.shape[1:], bool) if check_nodata or floats else None
        for band in range(len(x)):  # band by band, so later passes find it in cache
            target = plane if k else x[band]
            np.subtract(image[band], shift[band], out=target)
            target *= scale[band]
            if check_nodata:
                invalid |= image[band] == blank
            if floats:
                invalid |= ~np.isfinite(image[band])
            if plane is not None:
                np.copyto(x[band], symmetry(plane, k))
        if invalid is not None:
            np.copyto(x, 0.0, where=symmetry(invalid, k)[None])
        if moved is not targets:
            moved[i] = symmetry(targets[i], k)

    list(_pool().map(one, range(len(out))))
    return torch.from_numpy(out), torch.from_numpy(moved)


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool() -> ThreadPoolExecutor:
    threads = max(1, torch.get_num_threads())
    if threads not in _POOLS:
        _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="scratchsat-batch")
    return _POOLS[threads]


def cutmix_batch(
    x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix for segmentation: each sample, with probability ``p``, gets a square of another
    sample of the batch pasted in — image and mask by the same slice, so every pixel keeps its
    own label. The square's side is 25–75 % of the patch's, at a random place (the same place
    in the donor). Draws come from ``generator`` (on the host), so a seeded step replays."""
    n, h, w = len(x), x.shape[-2], x.shape[-1]
    if n < 2 or p <= 0:
        return x, y
    draws = torch.rand(n, 4, generator=generator)
    donors = (torch.arange(n) + torch.randint(1, n, (n,), generator=generator)) % n
    chosen = torch.nonzero(draws[:, 0] < p).flatten().tolist()
    if not chosen:
        return x, y
    x_out, y_out = x.clone(), y.clone()
    for i in chosen:
        side = 0.25 + 0.5 * float(draws[i, 1])
        bh, bw = max(1, round(h * side)), max(1, round(w * side))
        top, left = int(draws[i, 2] * (h - bh + 1)), int(draws[i, 3] * (w - bw + 1))
        rows, cols = slice(top, top + bh), slice(left, left + bw)
        j = int(donors[i])
        x_out[i, :, rows, cols] = x[j, :, rows, cols]
        y_out[i, rows, cols] = y[j, rows, cols]
    return x_out, y_out


def step_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    """A host generator for one training step's batch-level draws, from the run's seed, the
    epoch and the step, so a resumed epoch draws what the uninterrupted one drew."""
    state = np.random.SeedSequence([seed, epoch, step]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))
