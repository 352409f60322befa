"""Predict one block of a scene held in memory, exactly as the file predictor predicts it.

The xarray path (:mod:`scratchsat.xarray`) cuts a scene into blocks (Dask chunks) and predicts
each on its own, possibly on another machine. A block's pixels get the windows of the
*scene's* window grid (:func:`~scratchsat.geo.windows.cover_offsets`, the blend stride) that
touch it, read from the block grown by a halo of at most one window less a pixel, weighted by
the same bump and summed in the same order (window rows, then columns) as the file
predictor's :class:`~.engine.Blender` sums them; so the blended probabilities are the file
predictor's, whatever the block sizes (differences come only from batching the windows
differently, about 1e-7).

A worker loads each model once (:func:`cached_predictor`), not once per block.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from ..device import pick_device, undo_malloc_trim
from ..geo.raster import valid_mask
from ..geo.windows import blend_stride, blend_weight, cover_offsets, touching
from .engine import Predictor, batched, load_predictor
from .options import PredictOptions

_loaded: dict = {}  # per process: (bundle, options) → Predictor; the last one only
_lock = threading.Lock()  # a Dask worker runs tasks in threads
LOADS = {"count": 0}  # models this process has loaded (a worker: once per run, not per chunk)


def cached_predictor(bundle: str, options: PredictOptions) -> Predictor:
    """The predictor of ``bundle`` for ``options``, loaded once per process (a Dask worker
    keeps it from task to task); a new bundle or options replace it."""
    key = (bundle, options)
    with _lock:
        if key not in _loaded:
            undo_malloc_trim()
            _loaded.clear()
            _loaded[key] = load_predictor(bundle, options, pick_device(options.device))
            LOADS["count"] += 1
        return _loaded[key]


@dataclass(frozen=True)
class BlockGrid:
    """Where the windows of a scene fall: the scene's size, the window side and stride."""

    height: int
    width: int
    size: int
    stride: int

    @classmethod
    def of(cls, height: int, width: int, size: int, overlap: float) -> BlockGrid:
        return cls(height, width, size, blend_stride(size, overlap))

    def windows(self, axis: int, start: int, stop: int) -> np.ndarray:
        """Offsets along ``axis`` (0 rows, 1 columns) of the windows touching [start, stop)."""
        length = (self.height, self.width)[axis]
        return touching(cover_offsets(length, self.size, self.stride), self.size, start, stop)

    def region(self, rows: tuple[int, int], cols: tuple[int, int]) -> tuple[slice, slice]:
        """The part of the scene that the windows touching the block ``rows`` × ``cols``
        read (the block and its halo, within the scene)."""
        r, c = self.windows(0, *rows), self.windows(1, *cols)
        return (
            slice(int(r[0]), min(int(r[-1]) + self.size, self.height)),
            slice(int(c[0]), min(int(c[-1]) + self.size, self.width)),
        )


def predict_block(
    predictor: Predictor,
    raw: np.ndarray,
    nodata: float | None,
    grid: BlockGrid,
    rows: tuple[int, int],
    cols: tuple[int, int],
    batch_size: int,
) -> np.ndarray:
    """(K, rows, cols) float32 blended probabilities of the block ``rows`` × ``cols``
    (scene pixel ranges), NaN where the scene is invalid; ``raw`` is the scene's
    :meth:`BlockGrid.region` of the block, (C, h, w), in the model's band order."""
    region = grid.region(rows, cols)
    top, left, size = region[0].start, region[1].start, grid.size
    starts_r, starts_c = grid.windows(0, *rows), grid.windows(1, *cols)
    height = max(int(starts_r[-1]) + size - top, raw.shape[1])
    width = max(int(starts_c[-1]) + size - left, raw.shape[2])
    padded = np.zeros((raw.shape[0], height, width), raw.dtype)  # beyond the scene: invalid
    padded[:, : raw.shape[1], : raw.shape[2]] = raw
    valid = np.zeros((height, width), bool)
    valid[: raw.shape[1], : raw.shape[2]] = valid_mask(raw, nodata, None)
    x = predictor.normalise(padded, valid)  # (C, h, w) on the device
    device, k = predictor.device, predictor.num_classes
    out_h, out_w = rows[1] - rows[0], cols[1] - cols[0]
    acc = torch.zeros(k, out_h, out_w, device=device)
    weights = torch.zeros(out_h, out_w, device=device)
    bump = torch.from_numpy(blend_weight(size)).to(device)
    for row in starts_r.tolist():
        strip = x[..., row - top : row - top + size, :]
        # the window's rows inside the block, in window and in block coordinates
        wr = slice(max(rows[0] - row, 0), min(rows[1] - row, size))
        br = slice(row + wr.start - rows[0], row + wr.stop - rows[0])
        for group in batched(starts_c.tolist(), batch_size):
            windows = torch.stack([strip[..., c - left : c - left + size] for c in group])
            for probs, col in zip(predictor.probabilities(windows), group, strict=True):
                wc = slice(max(cols[0] - col, 0), min(cols[1] - col, size))
                bc = slice(col + wc.start - cols[0], col + wc.stop - cols[0])
                acc[:, br, bc] += (probs * bump)[:, wr, wc]
                weights[br, bc] += bump[wr, wc]
    blended = (acc / weights.clamp_min(1e-12)).cpu().numpy()
    inside = valid[rows[0] - top : rows[1] - top, cols[0] - left : cols[1] - left]
    blended[:, ~inside] = np.nan
    return blended
