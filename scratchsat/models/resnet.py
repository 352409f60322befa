"""torchvision ResNets from random weights, for any number of bands, and a ResNet-encoder U-Net."""

from __future__ import annotations

import torch
from torch import nn
from torchvision import models as tvm

from .layers import activation, norm
from .unet import UNetDecoder, double_conv, resize_to

DEPTHS = {"resnet18": tvm.resnet18, "resnet34": tvm.resnet34, "resnet50": tvm.resnet50}


def build_resnet(
    name: str,
    in_channels: int,
    num_classes: int,
    small_stem: bool,
    norm_name: str = "batch",
    act: str = "relu",
) -> tvm.ResNet:
    """A torchvision ResNet with ``weights=None``, its first convolution taking ``in_channels``.

    The small stem (3×3 stride-1 convolution, no max-pool) keeps 32–64 px patches from being
    shrunk 4× before the first residual stage.
    """
    model = DEPTHS[name](
        weights=None, num_classes=num_classes, norm_layer=lambda channels: norm(norm_name, channels)
    )
    if small_stem:
        model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    else:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    if act != "relu":
        replace_relu(model, act)
    return model


def replace_relu(module: nn.Module, act: str) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, activation(act))
        else:
            replace_relu(child, act)


class ResNetUNet(nn.Module):
    """A U-Net decoder on a ResNet encoder: skips from the stem and the four residual stages."""

    def __init__(
        self,
        name: str,
        in_channels: int,
        num_classes: int,
        small_stem: bool,
        norm_name: str = "batch",
        act: str = "relu",
    ) -> None:
        super().__init__()
        resnet = build_resnet(name, in_channels, 1, small_stem, norm_name, act)
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu)
        self.stages = nn.ModuleList(
            [
                nn.Sequential(resnet.maxpool, resnet.layer1),
                resnet.layer2,
                resnet.layer3,
                resnet.layer4,
            ]
        )
        expansion = 4 if name == "resnet50" else 1
        skips = [64] + [c * expansion for c in (64, 128, 256, 512)]
        self.decoder = UNetDecoder(skips, [256, 128, 64, 32], norm_name, act)
        self.refine = double_conv(32 + in_channels, 32, norm_name, act)  # full-resolution step
        self.head = nn.Conv2d(32, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [self.stem(x)]  # stride 1 (small stem) or 2
        for stage in self.stages:
            features.append(stage(features[-1]))
        y = resize_to(self.decoder(features), x)
        return self.head(self.refine(torch.cat([y, x], dim=1)))  # (N, num_classes, H, W)
