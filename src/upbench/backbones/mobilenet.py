"""MobileNet v1 (Howard et al., 2017) and v2 (Sandler et al., CVPR 2018) as a staged backbone.

Both are built on the depthwise separable convolution: a KxK depthwise conv (one filter per
input channel, ``groups=C_in``) followed by a 1x1 pointwise conv mixing the channels, with
``K*K*C_in + C_in*C_out`` weights instead of the ``K*K*C_in*C_out`` of a standard conv (no bias:
BN follows each conv).

* v1 block: depthwise separable conv, BN-ReLU after both convs.
* v2 block (inverted residual): 1x1 expansion by ``expand_ratio`` -> BN-ReLU6 -> depthwise
  separable conv whose pointwise projection is *linear* (BN, no activation: the linear
  bottleneck), plus the identity when the shapes allow it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from torch import Tensor, nn

from upbench.backbones.staged import StagedBackbone
from upbench.layers import conv_bn_act
from upbench.validation import positive_int

VERSIONS = (1, 2)


class DepthwiseSeparableConv(nn.Module):
    """Depthwise KxK conv -> BN -> act -> pointwise 1x1 conv -> BN [-> act].

    Args:
        in_channels, out_channels: channels.
        kernel_size: K of the depthwise conv.
        stride, dilation: of the depthwise conv.
        activation: activation module class.
        linear_output: no activation after the pointwise conv (v2's linear bottleneck).

    ``forward``: (N, in_channels, H, W) -> (N, out_channels, H / stride, W / stride).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        activation: Callable[[], nn.Module] = nn.ReLU,
        linear_output: bool = False,
    ):
        super().__init__()
        self.depthwise = conv_bn_act(
            in_channels,
            in_channels,
            kernel_size,
            stride,
            dilation,
            groups=in_channels,
            activation=activation,
        )
        self.pointwise = conv_bn_act(
            in_channels, out_channels, 1, activation=None if linear_output else activation
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


class InvertedResidual(nn.Module):
    """MobileNet v2 block: expand (1x1) -> depthwise separable conv with linear projection,
    plus the identity when ``stride == 1`` and ``in_channels == out_channels``.

    ``forward``: (N, in_channels, H, W) -> (N, out_channels, H / stride, W / stride).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        dilation: int = 1,
        expand_ratio: int = 6,
    ):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.expand = (
            conv_bn_act(in_channels, hidden, 1, activation=nn.ReLU6) if expand_ratio != 1 else None
        )
        self.separable = DepthwiseSeparableConv(
            hidden, out_channels, 3, stride, dilation, activation=nn.ReLU6, linear_output=True
        )
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        h = self.separable(x if self.expand is None else self.expand(x))
        return x + h if self.use_residual else h


class MobileNet(StagedBackbone):
    """Small MobileNet backbone: stem + stages of v1 or v2 blocks.

    Args:
        version: 1 (depthwise separable convs) or 2 (inverted residuals, linear bottlenecks).
        expand_ratio: v2 expansion factor ``t`` (6 in the paper).
        staged_options: ``in_channels``, ``width``, ``depth``, ``num_stages``, ``downsample``,
            ``dilate_last`` of :class:`~upbench.backbones.staged.StagedBackbone`.

    ``forward``: (N, in_channels, H, W) -> ``BackboneOutput`` (see
    :mod:`upbench.backbones.base`).
    """

    def __init__(self, version: int = 2, expand_ratio: int = 6, **staged_options: Any):
        if version not in VERSIONS:
            raise ValueError(f"backbone.version must be 1 or 2, got {version!r}")
        positive_int("backbone.expand_ratio", expand_ratio)
        block = _v1_block if version == 1 else partial(InvertedResidual, expand_ratio=expand_ratio)
        super().__init__(block, **staged_options)


def _v1_block(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1):
    return DepthwiseSeparableConv(in_channels, out_channels, 3, stride, dilation)
