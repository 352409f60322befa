"""Which process this is among those a launcher (``torchrun``, Slurm via torchrun) started:
:class:`Ranks`, the one reader of ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``. Free of torch,
so the tiler and the command line use it too."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Ranks:
    """This process among those a launcher (``torchrun``) started: training shares batches
    by it, prediction deals out scenes by it."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls) -> Ranks:
        """From RANK, WORLD_SIZE and LOCAL_RANK, as torchrun sets them; one process else."""
        if not launched():
            return SINGLE
        env = os.environ
        return cls(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))


SINGLE = Ranks()  # one process


def launched() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1
