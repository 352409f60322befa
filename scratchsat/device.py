"""Which device to run on, and which precision autocast should use there."""

from __future__ import annotations

import contextlib
import ctypes
import os
import warnings

import torch

from .errors import InputError, PrecisionWarning
from .ranks import SINGLE, Ranks, launched  # noqa: F401 - the API has them here too


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


def undo_malloc_trim() -> None:
    """Undo a small ``MALLOC_TRIM_THRESHOLD_`` in this process's environment (Dask's nanny sets
    65536 in every worker it starts): with it glibc serves every large tensor from a fresh
    ``mmap`` whose pages fault in again, which halves CPU inference (20 batches of a small
    U-Net on a Dask worker: 0.91 s, after this 0.42 s). Trim above 256 MB and ``mmap`` above
    64 MB then; a process without the variable keeps glibc's own thresholds."""
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to undo
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD
        libc.mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (timing needs it on CUDA; a no-op elsewhere)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


PROBE_SIDE = 32  # px: the window a model's memory per pixel is measured on


def memory_of(device: torch.device) -> int | None:
    """Bytes of memory ``device`` has in all: the GPU's, or this machine's for the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def forward_bytes(
    model: torch.nn.Module, bands: int, side: int, batch: int, device: torch.device
) -> int:
    """About how many bytes one forward pass of ``model`` holds at its peak, for ``batch``
    windows of ``side`` px without gradients: the input and three times the largest tensor a
    layer makes (a U-Net holds its skip connections beside the maps it computes), measured
    on one window of :data:`PROBE_SIDE` px and scaled by area. A model that cannot run the
    probe counts its input and class output only."""
    largest = 0

    def hook(module, inputs, output) -> None:
        nonlocal largest
        if isinstance(output, torch.Tensor):
            largest = max(largest, output.numel() * output.element_size())

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    probe = torch.zeros(1, bands, PROBE_SIDE, PROBE_SIDE, device=device)
    try:
        with torch.no_grad():
            out = model(probe)
        if isinstance(out, torch.Tensor):
            largest = max(largest, out.numel() * out.element_size())
    except Exception:  # a fixed input size, an operation the probe's size cannot take
        largest = 0
    finally:
        for handle in handles:
            handle.remove()
    per_pixel = (4 * bands + 3 * largest / PROBE_SIDE**2) if largest else 8 * bands
    return int(per_pixel * side * side * batch)


def check_memory(needed: int, device: torch.device, what: str, fix: str) -> None:
    """Refuse ``what`` (needing ``needed`` bytes) before anything is allocated when it could
    never fit the device's memory, with the figures and ``fix``."""
    have = memory_of(device)
    if have is not None and needed > have:
        kind = "GPU memory" if device.type == "cuda" else "memory"
        raise InputError(
            f"{what} needs about {needed / 1e9:,.1f} GB, more than the "
            f"{have / 1e9:,.1f} GB of {kind} this machine has; {fix}"
        )
