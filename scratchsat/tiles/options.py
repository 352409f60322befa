"""What ``tile`` is asked to do (:class:`TileOptions`) and how it sees a scene
(:class:`Scene`): the types the tiler, chip folders and the tiles-folder format share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import InputError
from ..geo.raster import Grid
from ..geo.sources import Source
from ..settings import comma_list, setting

TASKS = ("segmentation", "classification")
Progress = Callable[[int, int], None]
MAX_PATCH = 8192  # px: a patch or window side beyond this is a typo or a hand edit


@dataclass(frozen=True)
class TileOptions:
    """How to cut patches. ``stride`` defaults to ``patch_size``; ``block_size`` (the side of
    a spatial split block, in pixels) is sized per scene (:func:`geo.windows.block_side`)."""

    patch_size: int = setting(64, "Patch side in pixels.")
    stride: int | None = setting(
        None, "Step between windows in pixels (default: the patch size; smaller overlaps)."
    )
    min_valid: float = setting(
        0.5, "Skip windows with a smaller fraction of valid (not nodata) pixels."
    )
    min_labeled: float = setting(
        0.0, "Skip windows with a smaller fraction of labelled pixels (0: at least one)."
    )
    bands: tuple[str, ...] | None = setting(
        None,
        "Band subset by name or 1-based number, comma-separated.",
        option_type=str | None,
        parse=comma_list,
    )
    task: str = setting(
        "segmentation", "segmentation (a class per pixel) or classification (a class per patch)."
    )
    val: float = setting(0.2, "Fraction of patches for validation.")
    test: float = setting(0.1, "Fraction of patches for testing.")
    seed: int = setting(0, "Seed of the split.")
    block_size: int | None = setting(
        None,
        "Side of a spatial split block in pixels (default: per scene, the largest of 8 … 1 "
        "patches that cuts it into at least 50 blocks).",
    )
    chips: bool = setting(False, "Also write each patch as a georeferenced GeoTIFF under chips/.")
    workers: int = setting(1, "Worker processes.")

    def check(self) -> None:
        if self.task not in TASKS:
            raise InputError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        if self.patch_size < 4:  # (over MAX_PATCH: refused by tile once the scenes are read)
            raise InputError(f"--patch-size must be at least 4, got {self.patch_size}")
        if self.block_size is not None and self.block_size < 1:
            raise InputError(
                f"--block-size must be at least 1 px, got {self.block_size}; leave it out for "
                "blocks sized by the scene"
            )
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
class Shard:
    """Shard ``k`` of ``n`` (1-based): one machine's share of the scenes (``tile --shard K/N``,
    or a launcher's RANK + 1 of WORLD_SIZE)."""

    k: int
    n: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        try:
            k, n = (int(part) for part in text.split("/"))
        except ValueError:
            raise InputError(f"--shard takes K/N (e.g. 2/8), not {text!r}") from None
        if not 1 <= k <= n:
            raise InputError(f"--shard {text}: K must lie in 1..N")
        return cls(k, n)

    @classmethod
    def from_env(cls) -> Shard | None:
        """RANK/WORLD_SIZE as torchrun and other launchers set them (None for one process)."""
        from ..ranks import Ranks

        ranks = Ranks.from_env()
        return cls(ranks.rank + 1, ranks.world_size) if ranks.distributed else None

    @property
    def folder(self) -> str:
        return f"shard-{self.k}-of-{self.n}"

    def deal(self, scenes: Sequence[str]) -> list[str]:
        """This shard's scenes: all of them sorted as text, then dealt out like cards (the
        i-th, counting from 0, to shard i mod N + 1), so every machine given the same scene
        list agrees, whatever order its shell listed them in."""
        ordered = sorted(scenes, key=str)
        mine = ordered[self.k - 1 :: self.n]
        if not mine:
            raise InputError(
                f"shard {self.k}/{self.n} gets no scene: {len(ordered)} scene(s) for {self.n} "
                f"shards; use at most {len(ordered)} shards"
            )
        return mine


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
