"""Feature Pyramid Network top-down path (Lin et al., CVPR 2017) with a swappable upsampler,
and a semantic segmentation head over its finest level."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from upbench.decoders._pyramid import LevelProjections, x2_steps
from upbench.layers import conv_bn_act
from upbench.upsamplers.base import UpsamplerSpec, build_upsampler, upsample

_NAME = "fpn"


class FPNDecoder(nn.Module):
    """FPN: lateral 1x1 convs (with bias, as FPN) bring every level to ``channels``; the top-down
    path upsamples the coarser merged map x2 with the upsampler, guided by the lateral feature
    it is then added to (the detection protocol of FADE, SAPA and DySample), and a 3x3 conv
    smooths the merged map. The segmentation head reads the finest level only, so only that
    level gets its 3x3 output conv (semantic-FPN style conv-BN-ReLU; the other levels' output
    convs would be parameters without gradient). The model's 1x1 classifier follows and its
    logits are resized (bilinear) to the input.

    A dilated backbone stage (the same stride as the next finer one) is added without
    upsampling. Strides that differ by 4 or more get a chain of x2 steps.

    Shapes: the backbone's features (shallow to deep) -> (N, channels, H / s0, W / s0), s0 the
    finest stride read (``output_stride``).

    Args:
        encoder_channels: channels of the backbone features, shallow to deep.
        encoder_strides: their strides.
        upsampler: Hydra config (``_target_``) or factory of the x2 upsamplers.
        channels: channels of the pyramid (256 in FPN; small on CPU).
        num_levels: how many of the deepest features the pyramid has (4: P2-P5 in FPN).
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        encoder_strides: Sequence[int],
        upsampler: UpsamplerSpec,
        channels: int = 64,
        num_levels: int = 4,
    ):
        super().__init__()
        self.lateral = LevelProjections(
            encoder_channels, encoder_strides, upsampler, channels, num_levels, _NAME
        )
        strides = self.lateral.strides
        # top_down[i] takes merged level i + 1 to level i.
        self.top_down = nn.ModuleList(
            nn.ModuleList(
                build_upsampler(upsampler, channels, channels, 2, channels)
                for _ in range(x2_steps(fine, coarse, _NAME))
            )
            for fine, coarse in zip(strides[:-1], strides[1:], strict=True)
        )
        self.output = conv_bn_act(channels, channels, 3)
        self.out_channels = channels
        self.output_stride = strides[0]

    def upsamplers(self) -> nn.ModuleList:
        return nn.ModuleList(up for chain in self.top_down for up in chain)

    def uses_pool_indices(self) -> bool:
        return False

    def forward(self, features: Sequence[Tensor], indices: Sequence[Tensor | None]) -> Tensor:
        laterals = self.lateral(features)
        merged = laterals[-1]
        for level in range(len(laterals) - 2, -1, -1):
            lateral = laterals[level]
            for up in self.top_down[level]:
                # The guide has the size of this step's output: the lateral itself on the last
                # (or only) step, its subsampled copy on the earlier ones of a longer chain.
                factor = lateral.shape[-1] // (2 * merged.shape[-1])
                guide = lateral[..., ::factor, ::factor] if factor > 1 else lateral
                merged = upsample(up, merged, guide=guide)
            merged = merged + lateral
        return self.output(merged)
