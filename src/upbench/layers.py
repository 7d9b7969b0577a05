"""Blocks shared by the backbones, decoders and upsamplers (timm's ``layers``)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def same_conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
    bias: bool = False,
) -> nn.Conv2d:
    """A convolution with 'same' padding for odd kernels, dilation included: the output is
    (N, out_channels, ceil(H / stride), ceil(W / stride)). No bias by default: a BatchNorm
    usually follows."""
    return nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=dilation * (kernel_size - 1) // 2,
        dilation=dilation,
        groups=groups,
        bias=bias,
    )


def conv_bn_act(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
    activation: Callable[[], nn.Module] | None = nn.ReLU,
) -> nn.Sequential:
    """:func:`same_conv` (no bias: BN follows) -> BN -> activation."""
    layers: list[nn.Module] = [
        same_conv(in_channels, out_channels, kernel_size, stride, dilation, groups),
        nn.BatchNorm2d(out_channels),
    ]
    if activation is not None:
        layers.append(activation())
    return nn.Sequential(*layers)
