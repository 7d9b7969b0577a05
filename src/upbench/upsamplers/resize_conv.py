"""Resize-convolution upsampler (interpolate, then convolve)."""

from __future__ import annotations

from torch import Tensor, nn

from upbench.upsamplers._common import (
    check_channels,
    check_mode,
    check_odd_kernel,
    check_scale,
    resize,
)
from upbench.upsamplers.base import Upsampler


class ResizeConv(Upsampler):
    """Fixed interpolation followed by a learned 'same' convolution.

    Odena, Dumoulin & Olah, "Deconvolution and Checkerboard Artifacts", Distill 2016: resizing
    first and convolving afterwards gives every output pixel the same number of kernel taps, so
    it cannot produce the uneven-overlap checkerboard of a strided transposed convolution.

    Shapes: (N, in_channels, H, W) -> (N, out_channels, scale*H, scale*W).
    Parameters: kernel_size**2 * in_channels * out_channels + out_channels.

    Args:
        in_channels: channels of the input feature map.
        out_channels: channels of the output feature map.
        scale: integer upsampling factor (>= 1).
        mode: ``nearest``, ``bilinear``, ``bicubic`` or ``area`` (``align_corners=False`` where
            it applies).
        kernel_size: odd size of the convolution applied after resizing.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        scale: int,
        mode: str = "bilinear",
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        check_channels(in_channels, out_channels)
        self.scale = check_scale(scale)
        self.mode = check_mode(mode)
        check_odd_kernel(kernel_size)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(resize(x, self.scale, self.mode))
