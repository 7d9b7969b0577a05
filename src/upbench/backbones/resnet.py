"""ResNet (He et al., CVPR 2016) and pre-activation ResNet v2 (He et al., ECCV 2016).

Every block computes ``y = F(x) + shortcut(x)``; the shortcut is the identity, or a 1x1
(strided) projection when the number of channels or the resolution changes.

* v1 (``preact=False``): ``y = ReLU(BN(conv(...)) + shortcut(x))`` - activation after the sum.
* v2 (``preact=True``): the branch is BN -> ReLU -> conv repeated and nothing follows the sum,
  so the identity path stays clean; the network ends with BN -> ReLU.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from torch import Tensor, nn

from upbench.backbones.staged import StagedBackbone
from upbench.layers import conv_bn_act, same_conv

BLOCKS = ("basic", "bottleneck")


def _layers(channels: Sequence[int], kernels: Sequence[int], stride: int, dilation: int):
    """(C_in, C_out, kernel, stride, dilation) of each branch conv: the first 3x3 conv carries the
    stride (as in torchvision's ResNet v1.5), every 3x3 conv the dilation."""
    first_3x3 = list(kernels).index(3)
    return [
        (c_in, c_out, k, stride if i == first_3x3 else 1, dilation if k == 3 else 1)
        for i, (c_in, c_out, k) in enumerate(zip(channels[:-1], channels[1:], kernels, strict=True))
    ]


def _preact_branch(channels: Sequence[int], kernels: Sequence[int], stride: int, dilation: int):
    """v2 branch: (BN -> ReLU -> conv) per layer; the first BN-ReLU is applied by the block
    (it is shared with the projection shortcut), so layer 0 is the bare conv."""
    layers: list[nn.Module] = []
    for i, (c_in, c_out, k, s, d) in enumerate(_layers(channels, kernels, stride, dilation)):
        if i > 0:
            layers += [nn.BatchNorm2d(c_in), nn.ReLU(inplace=True)]
        layers.append(same_conv(c_in, c_out, k, s, d))
    return nn.Sequential(*layers)


def _postact_branch(channels: Sequence[int], kernels: Sequence[int], stride: int, dilation: int):
    """v1 branch: (conv -> BN -> ReLU) per layer, the last without ReLU (it follows the sum)."""
    layers = _layers(channels, kernels, stride, dilation)
    return nn.Sequential(
        *(
            conv_bn_act(c_in, c_out, k, s, d, activation=None if i == len(layers) - 1 else nn.ReLU)
            for i, (c_in, c_out, k, s, d) in enumerate(layers)
        )
    )


class ResidualBlock(nn.Module):
    """``y = F(x) + shortcut(x)`` with a v1 (post-activation) or v2 (pre-activation) branch.

    Args:
        channels: channels along the branch, e.g. ``[C_in, C_out, C_out]`` (basic) or
            ``[C_in, C_out / 4, C_out / 4, C_out]`` (bottleneck).
        kernels: kernel size of each branch conv (``[3, 3]`` or ``[1, 3, 1]``); the 3x3 conv
            carries the stride and the dilation.
        stride: 1 or 2.
        dilation: dilation of the 3x3 conv.
        preact: v2 ordering.

    ``forward``: (N, C_in, H, W) -> (N, C_out, H / stride, W / stride).
    """

    def __init__(
        self,
        channels: Sequence[int],
        kernels: Sequence[int],
        stride: int = 1,
        dilation: int = 1,
        preact: bool = False,
    ):
        super().__init__()
        in_channels, out_channels = channels[0], channels[-1]
        self.preact = preact
        make_branch = _preact_branch if preact else _postact_branch
        self.branch = make_branch(channels, kernels, stride, dilation)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = (
                same_conv(in_channels, out_channels, 1, stride)
                if preact
                else conv_bn_act(in_channels, out_channels, 1, stride, activation=None)
            )
        if preact:
            self.pre = nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(inplace=False))
        else:
            self.act = nn.ReLU(inplace=True)

    def last_norm(self) -> nn.BatchNorm2d:
        """The last BN of the residual branch (zero its weight and the block is the identity
        path: ``ReLU(x)`` for v1, ``x`` for v2)."""
        return [m for m in self.branch.modules() if isinstance(m, nn.BatchNorm2d)][-1]

    def forward(self, x: Tensor) -> Tensor:
        if self.preact:
            # He et al. 2016b: the projection shortcut also sees the pre-activated input.
            h = self.pre(x)
            shortcut = x if self.shortcut is None else self.shortcut(h)
            return self.branch(h) + shortcut
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return self.act(self.branch(x) + shortcut)


def basic_block(in_channels: int, out_channels: int, stride=1, dilation=1, preact=False):
    """Two 3x3 convs (ResNet-18/34)."""
    return ResidualBlock(
        [in_channels, out_channels, out_channels], [3, 3], stride, dilation, preact
    )


def bottleneck_block(
    in_channels: int, out_channels: int, stride=1, dilation=1, preact=False, expansion: int = 4
):
    """1x1 reduce to ``out_channels / expansion`` -> 3x3 -> 1x1 expand (ResNet-50+)."""
    if out_channels % expansion:
        raise ValueError(
            f"bottleneck blocks need out_channels ({out_channels}) divisible by {expansion}: "
            "use a backbone.width divisible by 2"
        )
    mid = out_channels // expansion
    return ResidualBlock([in_channels, mid, mid, out_channels], [1, 3, 1], stride, dilation, preact)


class ResNet(StagedBackbone):
    """Small ResNet for the benchmark: stem + stages of residual blocks.

    Args:
        block: ``"basic"`` or ``"bottleneck"``.
        preact: ``False`` for v1 (post-activation), ``True`` for v2 (BN -> ReLU -> conv).
        staged_options: ``in_channels``, ``width``, ``depth``, ``num_stages``, ``downsample``,
            ``dilate_last`` of :class:`~upbench.backbones.staged.StagedBackbone`.

    ``forward``: (N, in_channels, H, W) -> ``BackboneOutput`` (see
    :mod:`upbench.backbones.base`).
    """

    def __init__(self, block: str = "basic", preact: bool = False, **staged_options: Any):
        if block not in BLOCKS:
            raise ValueError(f"backbone.block must be one of {BLOCKS}, got {block!r}")
        factory = basic_block if block == "basic" else bottleneck_block
        super().__init__(partial(factory, preact=preact), **staged_options)
        if preact:
            # v2 leaves the residual stream un-normalised; the paper's final BN-ReLU closes it.
            self.stages[-1].blocks.append(
                nn.Sequential(nn.BatchNorm2d(self.out_channels[-1]), nn.ReLU(inplace=True))
            )
