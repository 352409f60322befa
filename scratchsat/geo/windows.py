"""Pure window geometry: patch grids over a scene, spatial blocks and split borders.

No I/O here. Offsets are pixel offsets (column, row) of a window's top-left corner.
"""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "val", "test")


def grid_offsets(length: int, patch_size: int, stride: int) -> np.ndarray:
    """Window offsets along one axis: every ``stride`` pixels, plus a last window shifted
    inward so the far edge is covered. Empty when the axis is shorter than one patch."""
    if length < patch_size:
        return np.empty(0, dtype=np.int64)
    offsets = np.arange(0, length - patch_size + 1, stride, dtype=np.int64)
    if offsets[-1] + patch_size < length:
        offsets = np.append(offsets, length - patch_size)
    return offsets


def assign_splits(block_ids: np.ndarray, val: float, test: float, seed: int) -> np.ndarray:
    """Give every candidate window a split code (0 train, 1 val, 2 test) by spatial block.

    ``block_ids`` holds one hashable block id per candidate window (an int array). Blocks are
    shuffled with ``seed`` and handed to val, then test, until each has its fraction of
    windows; the rest is train. Every window of one block gets the same split.
    """
    total = len(block_ids)
    blocks, counts = np.unique(block_ids, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(blocks))
    block_split = np.zeros(len(blocks), dtype=np.uint8)
    targets = ((1, val * total), (2, test * total))
    filled = {1: 0, 2: 0}
    position = 0
    for code, target in targets:
        while position < len(order) and filled[code] + counts[order[position]] / 2 <= target:
            block_split[order[position]] = code
            filled[code] += counts[order[position]]
            position += 1
    lookup = dict(zip(blocks.tolist(), block_split.tolist(), strict=True))
    return np.array([lookup[b] for b in block_ids.tolist()], dtype=np.uint8)


def split_border(xs: np.ndarray, ys: np.ndarray, splits: np.ndarray, patch_size: int) -> np.ndarray:
    """Windows to drop so that no two kept windows of different splits overlap.

    Priority is train > val > test: a window is dropped where it overlaps a window of a
    higher-priority split. ``xs``, ``ys``, ``splits`` describe the candidate windows of one
    scene. Returns a bool array, True = drop.
    """
    # Bucket windows by patch-sized cells: overlapping windows lie in neighbouring cells.
    cells: dict[tuple[int, int], list[int]] = {}
    for i, (x, y) in enumerate(
        zip((xs // patch_size).tolist(), (ys // patch_size).tolist(), strict=True)
    ):
        cells.setdefault((x, y), []).append(i)
    drop = np.zeros(len(xs), dtype=bool)
    for (cx, cy), members in cells.items():
        near = [
            j for dx in (-1, 0, 1) for dy in (-1, 0, 1) for j in cells.get((cx + dx, cy + dy), ())
        ]
        near_arr = np.array(near)
        for i in members:
            if splits[i] == 0:
                continue
            overlap = (np.abs(xs[near_arr] - xs[i]) < patch_size) & (
                np.abs(ys[near_arr] - ys[i]) < patch_size
            )
            drop[i] = bool((splits[near_arr[overlap]] < splits[i]).any())
    return drop


def window_stride(patch_size: int, overlap: float) -> int:
    """Step between windows that share ``overlap`` (a fraction) of their side."""
    return max(1, round(patch_size * (1 - overlap)))


def cover_offsets(length: int, patch_size: int, stride: int) -> np.ndarray:
    """Offsets of windows that cover an axis completely: :func:`grid_offsets`, or a single
    window at 0 (reaching past the end) when the axis is shorter than one patch."""
    if length <= patch_size:
        return np.zeros(1, dtype=np.int64)
    return grid_offsets(length, patch_size, stride)


def blend_weight(patch_size: int, floor: float = 1e-3) -> np.ndarray:
    """(P, P) float32 weight for blending overlapping window predictions: a separable sine
    bump, high in the middle where a window sees most context, small but never 0 at the edges
    (so pixels that only one window covers keep that window's prediction)."""
    ramp = np.sin(np.pi * (np.arange(patch_size) + 0.5) / patch_size)
    ramp = np.maximum(ramp, floor)
    return np.outer(ramp, ramp).astype(np.float32)
