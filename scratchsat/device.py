"""Which device to run on, and which precision autocast should use there."""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass

import torch

from .errors import InputError


def check_device_name(name: str) -> None:
    """A device name that cannot be one (a typo), refused before anything runs."""
    kind, _, number = name.partition(":")
    if name != "auto" and (kind not in ("cpu", "cuda", "mps") or (number and not number.isdigit())):
        raise InputError(f"unknown device {name!r}; choose auto, cpu, cuda, cuda:N or mps")


def pick_device(name: str) -> torch.device:
    """``auto`` → CUDA, else Apple's MPS, else the CPU; a named one must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    check_device_name(name)
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(
            f"--device {name} asked for, but PyTorch sees no CUDA GPU (torch {torch.__version__},"
            f" CUDA build {torch.version.cuda}); use --device cpu or auto"
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise InputError("--device mps asked for, but PyTorch sees no Apple GPU; use cpu or auto")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (timing needs it on CUDA; a no-op elsewhere)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PrecisionWarning(UserWarning):
    """Autocast asked for where it makes the run slower, not faster."""


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN computes bf16 natively on this CPU (AVX-512 BF16 or AMX); without it,
    bf16 autocast is emulated."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def autocast_dtype(
    device: torch.device, amp: bool | None, training: bool = False
) -> torch.dtype | None:
    """bf16 where autocast is asked for, fp16 on GPUs without bf16, None for full precision.

    The default (``amp`` None) is on for CUDA, and for training also on a CPU with native
    bf16 (AVX-512 BF16 or AMX): a U-Net step there ran 1.6x faster, so a time budget holds
    more epochs, and the quality benchmark scored higher with it (README). Prediction keeps
    full precision on the CPU unless asked. ``--amp`` on a CPU without native bf16 is kept (it
    was asked for) but warned about: emulated bf16 ran about 30x slower than fp32 on a 2-core
    AVX2 EPYC."""
    if amp is None:
        amp = device.type == "cuda" or (training and device.type == "cpu" and cpu_has_native_bf16())
    if not amp:
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    if device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn(
            "--amp on a CPU without native bf16 (it needs AVX-512 BF16 or AMX; oneDNN reports "
            "neither here): bf16 is emulated, and a training step runs many times slower than "
            "in full precision (30x measured on an AVX2 CPU); leave out --amp on this machine",
            PrecisionWarning,
            stacklevel=2,
        )
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast to ``dtype`` on ``device``; no autocast (full precision) for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


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
