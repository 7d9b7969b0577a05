"""Parameter-free interpolation upsamplers (nearest, bilinear, ...)."""

from __future__ import annotations

from torch import Tensor

from upbench.upsamplers._common import check_channels, check_mode, check_scale, resize
from upbench.upsamplers.base import Upsampler, channel_projection


class Interpolation(Upsampler):
    """Fixed interpolation, with a 1x1 projection only when the channel count changes.

    The non-learned baseline of Odena, Dumoulin & Olah, "Deconvolution and Checkerboard
    Artifacts", Distill 2016 (resize step of resize-convolution, without the 3x3 conv).

    Shapes: (N, in_channels, H, W) -> (N, out_channels, scale*H, scale*W).
    Parameters: 0 if in_channels == out_channels, else in_channels * out_channels + out_channels.

    Args:
        in_channels: channels of the input feature map.
        out_channels: channels of the output feature map.
        scale: integer upsampling factor (>= 1).
        mode: ``nearest``, ``bilinear``, ``bicubic`` or ``area`` (``align_corners=False`` where
            it applies).
    """

    is_interpolation = True

    def __init__(self, in_channels: int, out_channels: int, scale: int, mode: str) -> None:
        super().__init__()
        check_channels(in_channels, out_channels)
        self.scale = check_scale(scale)
        self.mode = check_mode(mode)
        self.proj = channel_projection(in_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        # Every supported mode writes each output pixel as an affine combination (weights sum to
        # 1) of input pixels, so it commutes with a 1x1 conv: projecting first gives the same
        # result as interpolate-then-project at 1/scale**2 of the cost.
        return resize(self.proj(x), self.scale, self.mode)
