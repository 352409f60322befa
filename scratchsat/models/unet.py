"""U-Nets for segmentation: a compact one, and a U-Net decoder on any encoder's feature maps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import conv_block


def double_conv(in_channels: int, out_channels: int, norm: str, act: str) -> nn.Sequential:
    return nn.Sequential(
        conv_block(in_channels, out_channels, norm, act),
        conv_block(out_channels, out_channels, norm, act),
    )


def resize_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Bilinear upsampling of ``x`` to ``like``'s height and width (a no-op when equal)."""
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class UNetDecoder(nn.Module):
    """From the deepest feature map up: upsample to the next skip, concatenate it, two convs.

    ``skips`` are encoder channel counts from shallowest to deepest; ``widths`` the decoder's
    channels per step (one fewer than ``skips``). Sizes need not be powers of two.
    """

    def __init__(self, skips: list[int], widths: list[int], norm: str, act: str) -> None:
        super().__init__()
        channels = skips[-1]
        self.steps = nn.ModuleList()
        for skip, width in zip(reversed(skips[:-1]), widths, strict=True):
            self.steps.append(double_conv(channels + skip, width, norm, act))
            channels = width
        self.out_channels = channels

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for step, skip in zip(self.steps, reversed(features[:-1]), strict=True):
            x = step(torch.cat([resize_to(x, skip), skip], dim=1))
        return x


class UNet(nn.Module):
    """Compact U-Net: ``depth`` poolings, ``width`` channels at full resolution, doubling."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        width: int = 32,
        depth: int = 4,
        activation: str = "relu",
        norm: str = "batch",
    ) -> None:
        super().__init__()
        widths = [width * 2**i for i in range(depth + 1)]
        self.encoder = nn.ModuleList(
            [
                double_conv(c_in, c_out, norm, activation)
                for c_in, c_out in zip([in_channels, *widths[:-1]], widths, strict=True)
            ]
        )
        self.decoder = UNetDecoder(widths, widths[-2::-1], norm, activation)
        self.head = nn.Conv2d(self.decoder.out_channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = []
        for i, block in enumerate(self.encoder):
            x = block(F.max_pool2d(x, 2, ceil_mode=True) if i else x)
            features.append(x)  # (N, width·2^i, H/2^i, W/2^i)
        return self.head(self.decoder(features))  # (N, num_classes, H, W)
