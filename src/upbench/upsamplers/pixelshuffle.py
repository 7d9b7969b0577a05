"""Sub-pixel convolution upsampler (conv to C*r^2 channels, then PixelShuffle)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from upbench.upsamplers._common import check_channels, check_odd_kernel, check_scale
from upbench.upsamplers.base import Upsampler


@torch.no_grad()
def icnr_(conv: nn.Conv2d, scale: int) -> None:
    """Initialise ``conv`` in place with ICNR for a following ``nn.PixelShuffle(scale)``.

    Aitken et al., "Checkerboard artifact free sub-pixel convolution", arXiv:1707.02937, 2017:
    draw one kernel of shape (C_out, C_in, k, k) with the usual (Kaiming-uniform) init and copy
    it to the r^2 consecutive filters c*r^2 + i*r + j that PixelShuffle sends to the r x r block
    of output channel c. At init the layer then equals conv + nearest-neighbour upsampling, so
    it starts free of checkerboard artifacts.

    ``conv.weight`` has shape (C_out * r^2, C_in, k, k); its bias (if any) is tied the same way.
    """
    blocks = scale * scale
    if conv.out_channels % blocks:
        raise ValueError(
            f"ICNR needs out_channels divisible by scale**2 = {blocks}, got {conv.out_channels}"
        )
    # A fresh conv of the sub-kernel's shape gives PyTorch's default Kaiming-uniform weight and
    # bias with the same fan-in as `conv`, so ICNR changes only the tying, not the scale.
    sub = nn.Conv2d(
        conv.in_channels,
        conv.out_channels // blocks,
        conv.kernel_size,
        bias=conv.bias is not None,
    )
    conv.weight.copy_(sub.weight.repeat_interleave(blocks, dim=0))
    if conv.bias is not None:
        conv.bias.copy_(sub.bias.repeat_interleave(blocks, dim=0))


class PixelShuffleUpsample(Upsampler):
    """Sub-pixel convolution: a conv to ``out_channels * scale**2`` channels, then PixelShuffle.

    Shi et al., "Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel
    Convolutional Neural Network" (ESPCN), CVPR 2016; ICNR init from Aitken et al., 2017.

    Shapes: (N, in_channels, H, W) -conv-> (N, out_channels * r^2, H, W)
    -PixelShuffle(r)-> (N, out_channels, r*H, r*W), r = scale.
    Parameters: k*k*in_channels*out_channels*r^2 + out_channels*r^2.

    Args:
        in_channels: channels of the input feature map.
        out_channels: channels of the output feature map.
        scale: integer upsampling factor r (>= 1).
        kernel_size: odd size of the convolution (3: each sub-pixel sees a 3x3 neighbourhood).
        icnr: initialise the conv with ICNR (recommended; False keeps PyTorch's default init).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        scale: int,
        kernel_size: int = 3,
        icnr: bool = True,
    ) -> None:
        super().__init__()
        check_channels(in_channels, out_channels)
        self.scale = check_scale(scale)
        check_odd_kernel(kernel_size)
        self.conv = nn.Conv2d(
            in_channels, out_channels * scale * scale, kernel_size, padding=kernel_size // 2
        )
        if icnr:
            icnr_(self.conv, scale)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.shuffle(self.conv(x))
