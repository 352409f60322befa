"""Data-parallel training under ``torchrun``: the process group, ranks and reductions.

``torchrun --standalone --nproc-per-node=N -m scratchsat train …`` starts N processes with
RANK, LOCAL_RANK and WORLD_SIZE set; each trains on its share of every epoch's batches, DDP
averages gradients, metrics are summed across processes, and rank 0 alone logs, shows
progress and writes files. Without those variables everything is a single process, as before.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ..device import SINGLE, Ranks, launched


def init(device: torch.device) -> tuple[Ranks, torch.device]:
    """Join the process group torchrun set up (NCCL on CUDA, gloo on the CPU); on CUDA each
    process takes the GPU of its local rank."""
    if not launched():
        return SINGLE, device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    ranks = Ranks(dist.get_rank(), dist.get_world_size(), Ranks.from_env().local_rank)
    if device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    return ranks, device


def wrap(model: nn.Module, ranks: Ranks, device: torch.device) -> nn.Module:
    if not ranks.distributed:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def all_sum(*tensors: torch.Tensor) -> None:
    """Sum tensors across processes, in place (nothing to do in a single process)."""
    if dist.is_available() and dist.is_initialized():
        for tensor in tensors:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class ShardSampler(torch.utils.data.Sampler):
    """Every ``world_size``-th index from ``rank``, in order, no padding: evaluation shards
    whose confusion matrices sum to the whole split's."""

    def __init__(self, size: int, ranks: Ranks) -> None:
        self.indices = list(range(ranks.rank, size, ranks.world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
