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


MIN_BLOCKS = 50  # split blocks a scene is cut into by default, where its windows allow
MAX_BLOCK_PATCHES = 8  # the default block side, in patches, where the scene is large enough


def block_ids(xs: np.ndarray, ys: np.ndarray, centre: int, block: int) -> np.ndarray:
    """The split block of each window (by its centre pixel), as one int per window."""
    return (((ys + centre) // block) << 20) + (xs + centre) // block


def block_side(xs: np.ndarray, ys: np.ndarray, patch_size: int) -> int:
    """The default split block side of one scene, in pixels: the largest of 8, 7, … 1
    patches that cuts the scene's windows into at least ``MIN_BLOCKS`` blocks (a 1536 × 768
    px scene of 32 px patches gets 4-patch blocks, a 480 × 440 px one 2-patch blocks), so that
    validation (a fifth) and test (a tenth) each get several blocks on a small scene as on a
    large one. Blocks of more patches keep neighbours together (less leakage between splits);
    more blocks make the splits representative."""
    centre = patch_size // 2
    for patches in range(MAX_BLOCK_PATCHES, 1, -1):
        if len(np.unique(block_ids(xs, ys, centre, patches * patch_size))) >= MIN_BLOCKS:
            return patches * patch_size
    return patch_size


def assign_splits(
    block_ids: np.ndarray,
    val: float,
    test: float,
    seed: int,
    class_pixels: np.ndarray | None = None,
) -> np.ndarray:
    """Give every candidate window a split code (0 train, 1 val, 2 test) by spatial block.

    ``block_ids`` holds one hashable block id per candidate window (an int array). Blocks are
    shuffled with ``seed`` and handed to val, then test, until each has its fraction of
    windows; the rest is train. Every window of one block gets the same split.

    ``class_pixels`` (windows × classes, labelled pixels per class), where given, stratifies:
    before the fill, val and then test each take one block of every class that lies in at
    least three blocks (so that train, val and test can all hold it), rarest class first: the
    first block in the shuffled order holding at least the class's median pixels per block
    (a typical block of it, not its richest), and only while another block of the class stays
    for train, and while the split holds at most twice its fraction. The fill then passes
    over any block that is the last one left for train of a
    class it holds.
    """
    total = len(block_ids)
    blocks, inverse, counts = np.unique(block_ids, return_inverse=True, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(blocks))
    block_split = np.zeros(len(blocks), dtype=np.uint8)
    filled = {1: 0, 2: 0}
    targets = ((1, val * total), (2, test * total))
    present = np.zeros((len(blocks), 0), bool)
    if class_pixels is not None:
        per_block = np.zeros((len(blocks), class_pixels.shape[1]), np.int64)
        np.add.at(per_block, inverse, class_pixels)
        present = per_block > 0
        for code, target in targets:
            if target > 0:
                filled[code] = _stratify(
                    per_block, present, counts, order, block_split, code, target
                )
    train_left = present[block_split == 0].sum(0)  # blocks per class still free for train
    position = 0
    for code, target in targets:
        while position < len(order):
            b = order[position]
            if block_split[b] == 0:
                if filled[code] + counts[b] / 2 > target:
                    break
                if not (present[b] & (train_left <= 1)).any():  # a class's last train block
                    block_split[b] = code
                    filled[code] += counts[b]
                    train_left -= present[b]
            position += 1
    return block_split[inverse]


def _stratify(
    per_block: np.ndarray,
    present: np.ndarray,
    counts: np.ndarray,
    order: np.ndarray,
    block_split: np.ndarray,
    code: int,
    target: float,
) -> int:
    """Hand split ``code`` one typical block of each class it lacks (see
    :func:`assign_splits`), while it holds at most twice its ``target`` of windows; the
    windows it now holds."""
    filled = 0
    for c in np.argsort(present.sum(0), kind="stable"):
        holding = present[:, c]
        if holding.sum() < 3 or (block_split[holding] == code).any():
            continue
        free = [b for b in order if holding[b] and block_split[b] == 0]
        if len(free) < 2:  # the last free block of the class stays for train
            continue
        typical = np.median(per_block[holding, c])
        pick = next((b for b in free if per_block[b, c] >= typical), free[0])
        if filled + counts[pick] <= 2 * target:
            block_split[pick] = code
            filled += counts[pick]
    return filled


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


def blend_stride(patch_size: int, overlap: float) -> int:
    """Step between the blended windows of a segmentation map: :func:`window_stride`, made odd
    (one less where it is even). A network's poolings halve its grid, so it sees a scene
    alike only at shifts of 2, 4, … 16 px: at an even step every window falls at the same
    phase of them and the map follows a grid of the step (a 16 px grid of squares at
    32 px windows, overlap 0.5); at an odd one successive windows fall at every phase and
    the blend averages them (Brandenburg: the class-boundary excess at one grid phase 9 %
    → 5 %, agreement with the map of the scene cut by 7 rows and 13 columns 97.5 % → 98.0 %,
    for 14 % more windows; docs/quality.md)."""
    stride = window_stride(patch_size, overlap)
    return stride - 1 if stride > 1 and stride % 2 == 0 else stride


def cover_offsets(length: int, patch_size: int, stride: int) -> np.ndarray:
    """Offsets of windows that cover an axis completely: :func:`grid_offsets`, or a single
    window at 0 (reaching past the end) when the axis is shorter than one patch."""
    if length <= patch_size:
        return np.zeros(1, dtype=np.int64)
    return grid_offsets(length, patch_size, stride)


def touching(offsets: np.ndarray, size: int, start: int, stop: int) -> np.ndarray:
    """The ``offsets`` of windows of side ``size`` that cover part of ``[start, stop)``."""
    return offsets[(offsets < stop) & (offsets + size > start)]


def blend_weight(patch_size: int, floor: float = 1e-3) -> np.ndarray:
    """(P, P) float32 weight for blending overlapping window predictions: a separable sine
    bump, high in the middle where a window sees most context, small but never 0 at the edges
    (so pixels that only one window covers keep that window's prediction)."""
    ramp = np.sin(np.pi * (np.arange(patch_size) + 0.5) / patch_size)
    ramp = np.maximum(ramp, floor)
    return np.outer(ramp, ramp).astype(np.float32)
