"""Building blocks shared by the models: activation, normalisation and weight initialisation."""

from __future__ import annotations

import math

from torch import nn

from ..errors import InputError

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "elu": nn.ELU, "silu": nn.SiLU}
NORMS = ("batch", "group", "none")
INITS = ("kaiming", "xavier", "orthogonal")


def check_choice(kind: str, value: str, choices) -> None:
    if value not in choices:
        raise InputError(f"unknown {kind} {value!r}; choose one of {', '.join(choices)}")


def activation(name: str) -> nn.Module:
    check_choice("activation", name, ACTIVATIONS)
    return ACTIVATIONS[name](inplace=True) if name in ("relu", "elu", "silu") else nn.GELU()


def norm(name: str, channels: int) -> nn.Module:
    """Batch norm, group norm (up to 32 groups that divide ``channels``) or nothing."""
    check_choice("normalisation", name, NORMS)
    if name == "batch":
        return nn.BatchNorm2d(channels)
    if name == "group":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    return nn.Identity()


def conv_block(in_channels: int, out_channels: int, norm_name: str, act: str) -> nn.Sequential:
    """3×3 convolution, normalisation, activation (no bias where a norm follows)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=norm_name == "none"),
        norm(norm_name, out_channels),
        activation(act),
    )


def init_weights(model: nn.Module, init: str) -> None:
    """Random initialisation of every convolution and linear layer; norms start at identity."""
    check_choice("init", init, INITS)
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            if init == "kaiming":
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif init == "xavier":
                nn.init.xavier_uniform_(module.weight)
            else:
                nn.init.orthogonal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
