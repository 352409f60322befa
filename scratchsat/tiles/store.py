"""The patch store: plain ``.npy`` arrays that load memory-mapped, without GDAL.

``images.npy`` (N, C, P, P) in the scene's dtype, ``masks.npy`` (N, P, P) uint8 class ids with
255 = ignore (segmentation), ``labels.npy`` (N,) uint8 patch class, ``splits.npy`` (N,) uint8
(0 train, 1 val, 2 test), ``windows.npy`` (N, 3) int64 (scene index, column, row offset).

Arrays are appended patch by patch, so the count need not be known up front: the header has a
fixed size and is rewritten with the final shape when the writer closes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

HEADER_SIZE = 128  # bytes; numpy pads its own headers to a multiple of 64
MAGIC = b"\x93NUMPY\x01\x00"


def npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """A version 1.0 ``.npy`` header of exactly HEADER_SIZE bytes."""
    meta = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
        "fortran_order": False,
        "shape": tuple(int(n) for n in shape),
    }
    text = repr(meta).encode("latin1")
    padding = HEADER_SIZE - len(MAGIC) - 2 - len(text) - 1
    if padding < 0:
        raise ValueError(f"an npy header for shape {shape} does not fit {HEADER_SIZE} bytes")
    body = text + b" " * padding + b"\n"
    return MAGIC + len(body).to_bytes(2, "little") + body


class NpyWriter:
    """Append rows of a fixed shape and dtype to a ``.npy`` file."""

    def __init__(self, path: str | os.PathLike, dtype, row_shape: tuple[int, ...]) -> None:
        self.path, self.dtype, self.row_shape = Path(path), np.dtype(dtype), tuple(row_shape)
        self.count = 0
        self._file = open(self.path, "wb")  # noqa: SIM115 (closed in close())
        self._file.write(npy_header(self.dtype, (0, *self.row_shape)))

    def append(self, rows: np.ndarray) -> None:
        """Append (k, *row_shape) rows."""
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.row_shape:
            raise ValueError(f"rows of shape {rows.shape[1:]} do not fit {self.row_shape}")
        if rows.size:
            self._file.write(memoryview(rows).cast("B"))  # type: ignore[arg-type]  # no copy
        self.count += len(rows)

    def close(self) -> None:
        self._file.seek(0)
        self._file.write(npy_header(self.dtype, (self.count, *self.row_shape)))
        self._file.close()


def keep_rows(path: str | os.PathLike, keep: np.ndarray) -> None:
    """Drop the rows of a ``.npy`` file where ``keep`` is False, in place."""
    array = np.load(path, mmap_mode="r+")
    rows = np.flatnonzero(keep)
    if len(rows) == len(array):
        return
    for new, old in enumerate(rows):  # forward moves only: row new <= old is never read again
        if new != old:
            array[new] = array[old]
    array.flush()
    dtype, row_shape = array.dtype, array.shape[1:]
    del array
    row_bytes = dtype.itemsize * int(np.prod(row_shape))
    with open(path, "r+b") as f:
        f.write(npy_header(dtype, (len(rows), *row_shape)))
        f.truncate(HEADER_SIZE + row_bytes * len(rows))


def load(path: str | os.PathLike, name: str) -> np.ndarray:
    """Memory-map one array of a tiles folder."""
    return np.load(Path(path) / f"{name}.npy", mmap_mode="r")
