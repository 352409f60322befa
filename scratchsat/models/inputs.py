"""What a network is fed and wrapped in: normalised bands, and the module inside wrappers.
Shared by training and prediction, so it lives with the models."""

from __future__ import annotations

import torch
from torch import nn


def standardise(
    x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, invalid: torch.Tensor
) -> torch.Tensor:
    """``(x - mean) / std`` over the band axis (-3) of (…, C, H, W) ``x``; 0 where ``invalid``
    (broadcast over bands) — the one place training and prediction normalise on the device."""
    x = (x - mean.view(-1, 1, 1)) / std.view(-1, 1, 1)
    return x.masked_fill(invalid, 0.0)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside torch.compile and DDP wrappers."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def d4(x: torch.Tensor, k: int) -> torch.Tensor:
    """Symmetry ``k`` (0–7) of the last two axes: rotate by k % 4 quarter turns, then mirror
    when k ≥ 4. k = 0 is the identity."""
    x = torch.rot90(x, k % 4, dims=(-2, -1)) if k % 4 else x
    return torch.flip(x, dims=(-1,)) if k >= 4 else x


def d4_inverse(x: torch.Tensor, k: int) -> torch.Tensor:
    """Undo :func:`d4` ``k``: ``d4_inverse(d4(x, k), k) == x``."""
    x = torch.flip(x, dims=(-1,)) if k >= 4 else x
    return torch.rot90(x, -(k % 4), dims=(-2, -1)) if k % 4 else x
