"""What a network is fed and wrapped in: normalised bands, and the module inside wrappers.
Shared by training and prediction, so it lives with the models."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import InputError


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


def index_pairs(text: str | None, bands: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """``--indices A-B,C-D`` as 0-based positions in ``bands`` (names may hold a '-': the
    split is the one where both sides are band names); a name not among them is refused.
    No text: no pairs."""
    if not text:
        return ()
    pairs = []
    for item in text.split(","):
        item = item.strip()
        splits = [
            (item[:i], item[i + 1 :]) for i, c in enumerate(item) if c == "-" and 0 < i < len(item)
        ]
        found = [(bands.index(a), bands.index(b)) for a, b in splits if a in bands and b in bands]
        if len(found) != 1 or found[0][0] == found[0][1]:
            raise InputError(
                f"--indices {text!r}: {item!r} is not two different band names joined by '-' "
                f"(A-B for (A - B) / (A + B)); the bands are {', '.join(bands)}"
            )
        pairs.append(found[0])
    return tuple(pairs)


class WithIndices(nn.Module):
    """``net`` fed the standardised bands and, after them, one normalised difference
    (a - b) / (a + b) per band pair, computed on the bands' own values (so NDVI is NDVI):
    ``mean``/``std`` undo the standardisation and travel with the weights. The difference is
    clamped to [-1, 1], 0 where a + b is 0 and where every band is 0 (invalid pixels)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: nn.Module, pairs: Sequence[tuple[int, int]], bands: int) -> None:
        super().__init__()
        self.net = net
        self.first = [a for a, _ in pairs]
        self.second = [b for _, b in pairs]
        self.register_buffer("mean", torch.zeros(bands))
        self.register_buffer("std", torch.ones(bands))

    def set_band_stats(self, mean, std) -> None:
        """The per-band mean and std the inputs were standardised with."""
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        own = x.float() * self.std.view(-1, 1, 1) + self.mean.view(-1, 1, 1)
        a, b = own[:, self.first], own[:, self.second]
        total = a + b
        usable = (total.abs() > 1e-6) & (x != 0).any(dim=1, keepdim=True)
        ratio = (a - b) / torch.where(usable, total, torch.ones_like(total))
        indices = torch.where(usable, ratio.clamp(-1.0, 1.0), torch.zeros_like(ratio))
        return self.net(torch.cat([x, indices.to(x.dtype)], dim=1))


def set_band_stats(model: nn.Module, mean, std) -> None:
    """Give a model with ``--indices`` the band statistics its inputs are standardised with
    (nothing to do for one without)."""
    inner = unwrap(model)
    if isinstance(inner, WithIndices):
        inner.set_band_stats(mean, std)
