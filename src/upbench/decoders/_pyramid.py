"""What the pyramid decoders (SegFormer head, FPN) share: the levels they read and the
upsamplers they cannot take."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from upbench.upsamplers.base import UpsamplerSpec, declaration
from upbench.validation import is_int


def deepest_levels(
    encoder_channels: Sequence[int], encoder_strides: Sequence[int], num_levels: int, decoder: str
) -> tuple[list[int], list[int], int]:
    """Channels and strides of the ``num_levels`` deepest backbone features, and the index of
    the first one; the literature's heads read four (strides 4 to 32 of a ResNet or MiT)."""
    encoder_channels, encoder_strides = list(encoder_channels), list(encoder_strides)
    if len(encoder_channels) != len(encoder_strides):
        raise ValueError("encoder_channels and encoder_strides must have the same length")
    levels = len(encoder_channels)
    if not is_int(num_levels) or not 2 <= num_levels <= levels:
        raise ValueError(
            f"decoder.num_levels={num_levels!r}: the {decoder} head reads 2 to {levels} "
            f"levels of this backbone (strides {encoder_strides}); set "
            f"decoder.num_levels={min(4, levels)}"
        )
    first = levels - num_levels
    return encoder_channels[first:], encoder_strides[first:], first


def refuse_pool_indices(upsampler: UpsamplerSpec, decoder: str) -> None:
    declared = declaration(upsampler)
    if declared.needs_pool_indices:
        raise ValueError(
            f"{declared.name} unpools with the encoder's max-pooling indices, which the {decoder} "
            "head cannot hand it (its features are 1x1 projections with other channels): use "
            "decoder=unet or decoder=segnet with backbone.downsample=maxpool"
        )


def x2_steps(fine_stride: int, coarse_stride: int, decoder: str) -> int:
    """How many x2 upsamplers take ``coarse_stride`` to ``fine_stride``."""
    ratio, rest = divmod(coarse_stride, fine_stride)
    if rest or ratio & (ratio - 1):
        raise ValueError(
            f"the {decoder} head upsamples in x2 steps, but strides {fine_stride} and "
            f"{coarse_stride} differ by {coarse_stride / fine_stride:g}: use decoder=unet"
        )
    return ratio.bit_length() - 1


class LevelProjections(nn.Module):
    """The input of a pyramid head: 1x1 convs (with bias) that bring each of the ``num_levels``
    deepest backbone features to ``channels`` (SegFormer's per-stage MLPs, FPN's laterals).
    Refuses upsamplers that need pooling indices, which no such head can hand over."""

    def __init__(
        self,
        encoder_channels: Sequence[int],
        encoder_strides: Sequence[int],
        upsampler: UpsamplerSpec,
        channels: int,
        num_levels: int,
        decoder: str,
    ):
        super().__init__()
        refuse_pool_indices(upsampler, decoder)
        level_channels, self.strides, self.first_level = deepest_levels(
            encoder_channels, encoder_strides, num_levels, decoder
        )
        self.convs = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in level_channels)

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        deepest = features[self.first_level :]
        return [conv(feature) for conv, feature in zip(self.convs, deepest, strict=True)]
