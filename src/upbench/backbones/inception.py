"""Inception (GoogLeNet, Szegedy et al., CVPR 2015) modules as a staged backbone.

An Inception module runs four branches in parallel on the same input and concatenates them along
the channels:

* 1x1 conv;
* 1x1 reduction -> 3x3 conv;
* 1x1 reduction -> 5x5 conv;
* 3x3 max pooling -> 1x1 projection.

The 1x1 reductions keep the 3x3/5x5 convolutions cheap. Every conv is followed by BN and ReLU
(as in torchvision's GoogLeNet). With ``stride=2`` every branch downsamples (the spatial convs,
the 1x1 branch and the pooling are strided); a dilation applies to the 3x3 and 5x5 convs.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from upbench.backbones.staged import StagedBackbone
from upbench.layers import conv_bn_act


class InceptionChannels(NamedTuple):
    """Channels of the four branches (``ch*red``: width of the 1x1 reductions)."""

    ch1x1: int
    ch3x3red: int
    ch3x3: int
    ch5x5red: int
    ch5x5: int
    pool_proj: int

    @classmethod
    def split(cls, out_channels: int) -> InceptionChannels:
        """GoogLeNet's inception(3a) proportions: 1/4 1x1, 1/2 3x3, 1/8 5x5, 1/8 pool
        projection, reductions to half of their branch."""
        if out_channels < 8:
            raise ValueError(
                f"an Inception module needs at least 8 output channels (got {out_channels}): "
                "increase backbone.width"
            )
        ch1, ch3, ch5 = out_channels // 4, out_channels // 2, out_channels // 8
        return cls(
            ch1, max(ch3 // 2, 1), ch3, max(ch5 // 2, 1), ch5, out_channels - ch1 - ch3 - ch5
        )

    @property
    def out_channels(self) -> int:
        return self.ch1x1 + self.ch3x3 + self.ch5x5 + self.pool_proj


class InceptionModule(nn.Module):
    """Four parallel branches, concatenated.

    ``forward``: (N, in_channels, H, W) -> (N, channels.out_channels, H / stride, W / stride).
    """

    def __init__(
        self, in_channels: int, channels: InceptionChannels, stride: int = 1, dilation: int = 1
    ):
        super().__init__()
        c = channels
        self.branch1x1 = conv_bn_act(in_channels, c.ch1x1, 1, stride)
        self.branch3x3 = nn.Sequential(
            conv_bn_act(in_channels, c.ch3x3red, 1),
            conv_bn_act(c.ch3x3red, c.ch3x3, 3, stride, dilation),
        )
        self.branch5x5 = nn.Sequential(
            conv_bn_act(in_channels, c.ch5x5red, 1),
            conv_bn_act(c.ch5x5red, c.ch5x5, 5, stride, dilation),
        )
        self.branch_pool = nn.Sequential(
            nn.MaxPool2d(3, stride, padding=1), conv_bn_act(in_channels, c.pool_proj, 1)
        )
        self.out_channels = c.out_channels

    def branches(self) -> list[nn.Module]:
        return [self.branch1x1, self.branch3x3, self.branch5x5, self.branch_pool]

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([branch(x) for branch in self.branches()], dim=1)


def inception_block(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1):
    return InceptionModule(in_channels, InceptionChannels.split(out_channels), stride, dilation)


class Inception(StagedBackbone):
    """Small GoogLeNet-style backbone: stem + stages of Inception modules.

    Args:
        downsample: ``"maxpool"`` by default, since GoogLeNet itself downsamples with max
            pooling between its modules.
        staged_options: ``in_channels``, ``width``, ``depth``, ``num_stages``, ``dilate_last`` of
            :class:`~upbench.backbones.staged.StagedBackbone`.

    ``forward``: (N, in_channels, H, W) -> ``BackboneOutput`` (see
    :mod:`upbench.backbones.base`).
    """

    def __init__(self, downsample: str = "maxpool", **staged_options: Any):
        super().__init__(inception_block, downsample=downsample, **staged_options)
