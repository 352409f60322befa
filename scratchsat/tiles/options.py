"""What ``tile`` is asked to do (:class:`TileOptions`) and how it sees a scene
(:class:`Scene`): the types the tiler, chip folders and the tiles-folder format share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import InputError
from ..geo.raster import Grid
from ..geo.sources import Source

TASKS = ("segmentation", "classification")
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class TileOptions:
    """How to cut patches. ``stride`` defaults to ``patch_size``; ``block_size`` (the side of
    a spatial split block, in pixels) to 8 patches."""

    patch_size: int = 64
    stride: int | None = None
    min_valid: float = 0.5
    min_labeled: float = 0.0
    bands: tuple[str, ...] | None = None
    task: str = "segmentation"
    val: float = 0.2
    test: float = 0.1
    seed: int = 0
    block_size: int | None = None
    chips: bool = False
    workers: int = 1

    def check(self) -> None:
        if self.task not in TASKS:
            raise InputError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        if self.patch_size < 4:
            raise InputError(f"--patch-size must be at least 4, got {self.patch_size}")
        if self.workers < 1:
            raise InputError(f"--workers must be at least 1, not {self.workers}")
        if self.stride is not None and self.stride < 1:
            raise InputError(f"--stride must be at least 1, got {self.stride}")
        for name in ("min_valid", "min_labeled", "val", "test"):
            if not 0 <= getattr(self, name) <= 1:
                raise InputError(
                    f"--{name.replace('_', '-')} must lie in [0, 1], got {getattr(self, name)}"
                )
        if self.val + self.test >= 1:
            raise InputError(
                f"--val {self.val} + --test {self.test} leave no training patches; "
                "keep their sum below 1"
            )


@dataclass(frozen=True)
class Scene:
    """One input scene as the tiler sees it."""

    path: Source
    grid: Grid
    band_indexes: tuple[int, ...]
    bands: tuple[str, ...]
    dtype: str
    nodata: float | None
    uses_mask: bool
    block_height: int = 1
    fill: tuple[float, ...] | None = None  # stored in pixels only GDAL's mask band marks invalid
    names_described: bool = False  # band names are the bands' descriptions, not numbers
