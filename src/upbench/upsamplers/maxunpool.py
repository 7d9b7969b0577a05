"""Max-unpooling upsampler driven by the encoder's pooling indices (SegNet)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from upbench.upsamplers._common import check_channels
from upbench.upsamplers.base import Scales, Upsampler, channel_projection, only

_POOL = 2


class MaxUnpool(Upsampler):
    """Place each value back where the encoder's 2x2 max-pool found it; zeros elsewhere.

    Badrinarayanan, Kendall & Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder
    Architecture for Image Segmentation", TPAMI 2017. The indices come from the encoder's
    ``nn.MaxPool2d(2, 2, return_indices=True)``, so the decoder must mirror the encoder's channels.

    Shapes: x (N, in_channels, H, W), indices (N, out_channels, H, W) int64
    -> (N, out_channels, 2H, 2W), or (N, out_channels, *output_size) when ``output_size`` (the
    spatial size of the tensor that was pooled, e.g. 2H+1 for odd inputs) is given.
    Parameters: 0 if in_channels == out_channels, else in_channels * out_channels + out_channels
    (a 1x1 projection applied before unpooling, because the indices have out_channels channels).

    Args:
        in_channels: channels of x.
        out_channels: channels of the output and of ``indices``.
        scale: must be 2 (the encoder's pool kernel and stride).
    """

    needs_pool_indices = True

    @classmethod
    def supported_scales(cls, in_channels: int, **options) -> Scales:
        return only(_POOL)

    def __init__(self, in_channels: int, out_channels: int, scale: int) -> None:
        super().__init__()
        check_channels(in_channels, out_channels)
        if scale != _POOL:
            raise ValueError(
                f"MaxUnpool only supports scale={_POOL} (it inverts a {_POOL}x{_POOL} max-pool), "
                f"got scale={scale!r}; use a decoder whose every stage upsamples x2, or another "
                f"upsampler"
            )
        self.scale = scale
        self.out_channels = out_channels
        self.proj = channel_projection(in_channels, out_channels)

    def forward(
        self, x: Tensor, indices: Tensor, output_size: tuple[int, int] | None = None
    ) -> Tensor:
        x = self.proj(x)
        if x.shape != indices.shape:
            raise ValueError(
                f"MaxUnpool got x of shape {tuple(x.shape)} (after projection to out_channels="
                f"{self.out_channels}) but pool indices of shape {tuple(indices.shape)}; the "
                f"decoder's channels (decoder.channels) must mirror the encoder's, stage by stage, "
                f"so that each unpool receives indices from a pool with the same channels and size"
            )
        return F.max_unpool2d(x, indices, _POOL, _POOL, output_size=output_size)
