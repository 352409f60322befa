"""The classic small CNN, generalised: conv–norm–activation–pool blocks, then a classifier."""

from __future__ import annotations

import torch
from torch import nn

from .layers import conv_block


class SimpleCNN(nn.Module):
    """``depth`` blocks whose width doubles from ``width`` (capped at 8×), each halving the
    patch; global average pooling makes the classifier independent of the patch size."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        width: int = 32,
        depth: int = 3,
        activation: str = "relu",
        norm: str = "batch",
    ) -> None:
        super().__init__()
        blocks, channels = [], in_channels
        for i in range(depth):
            out = width * 2 ** min(i, 3)
            blocks += [conv_block(channels, out, norm, activation), nn.MaxPool2d(2, ceil_mode=True)]
            channels = out
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)  # (N, channels)
        return self.classifier(x)  # (N, num_classes)
