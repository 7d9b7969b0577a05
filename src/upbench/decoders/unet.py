"""U-Net style decoder (Ronneberger et al., MICCAI 2015) with a swappable upsampler.

The decoder is built from the backbone's *actual* strides: every pair of neighbouring feature maps
whose strides differ by a factor ``f`` gets one upsampler of scale ``f``; a dilated stage (same
stride as its predecessor) gets none. Each upsampler is built by
:func:`upbench.upsamplers.base.build_upsampler` with ``(in_channels, out_channels, scale=f)``; a
guided one also gets ``guide_channels``, and sees the encoder feature of the level it upsamples
to, the same feature the stage then fuses as its skip.

Shapes: ``forward(features, indices)`` takes the backbone's features (shallow to deep, strides
``encoder_strides``) and returns ``(N, out_channels, H, W)`` at the input resolution ``H x W``
(stride 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from upbench.layers import conv_bn_act
from upbench.upsamplers.base import UpsamplerSpec, build_upsampler, declaration, upsample


def refinement(in_channels: int, out_channels: int, num_convs: int) -> nn.Sequential:
    """``num_convs`` 3x3 conv-BN-ReLU layers (one flat Sequential), the first mapping
    in_channels -> out_channels."""
    return nn.Sequential(
        *(
            layer
            for i in range(num_convs)
            for layer in conv_bn_act(in_channels if i == 0 else out_channels, out_channels, 3)
        )
    )


class DecoderStage(nn.Module):
    """Upsample (when the stride changes), fuse the skip feature, refine with 3x3 convs."""

    def __init__(
        self,
        upsampler: nn.Module | None,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        fusion: str,
        refine_convs: int,
    ):
        super().__init__()
        self.upsampler = upsampler
        self.fusion = fusion
        up_channels = out_channels if upsampler is not None else in_channels
        if fusion == "concat":
            self.skip_proj = None
            refine_in = up_channels + skip_channels
        elif fusion == "add":
            self.skip_proj = (
                nn.Conv2d(skip_channels, up_channels, 1, bias=False)
                if skip_channels not in (0, up_channels)
                else None
            )
            refine_in = up_channels
        else:
            raise ValueError(f"decoder.fusion must be 'concat' or 'add', got {fusion!r}")
        self.refine = refinement(refine_in, out_channels, refine_convs)

    def forward(
        self, x: Tensor, skip: Tensor | None, guide: Tensor, indices: Tensor | None
    ) -> Tensor:
        """``guide``: the encoder feature of the level this stage decodes to (its size is the
        stage's output size); ``skip``: the same feature when the decoder fuses skips."""
        size = guide.shape[-2:]
        if self.upsampler is not None:
            x = upsample(self.upsampler, x, guide=guide, indices=indices, output_size=size)
        if tuple(x.shape[-2:]) != tuple(size):
            raise RuntimeError(
                f"decoder stage produced {tuple(x.shape[-2:])} but the skip level is "
                f"{tuple(size)}; "
                "the upsampler does not give exactly scale x the input size"
            )
        if skip is not None:
            if self.fusion == "concat":
                x = torch.cat([x, skip], dim=1)
            else:
                x = x + (self.skip_proj(skip) if self.skip_proj is not None else skip)
        return self.refine(x)


class UNetDecoder(nn.Module):
    """Decoder that walks the encoder's pyramid back up, one :class:`DecoderStage` per level.

    Args:
        encoder_channels: channels of the backbone features, shallow to deep.
        encoder_strides: strides of the backbone features, shallow to deep.
        upsampler: Hydra config (``_target_`` + options) or factory ``(in_channels, out_channels,
            scale) -> nn.Module`` used for every stage.
        channels: decoder channels per level (shallow to deep), an int for all levels, or ``None``
            to mirror the encoder (required by ``maxunpool``, whose indices carry encoder channels).
        skips: fuse the encoder feature of each level.
        fusion: ``"concat"`` (U-Net) or ``"add"`` (FPN-like, 1x1 projection of the skip).
        refine_convs: 3x3 conv-BN-ReLU layers after each fusion.
        head_stride: stride at which decoding stops; the rest of the way to the input resolution is
            one upsampler call of scale ``head_stride`` (so a direct x4/x8 upsampler can be compared
            with ``stepwise``). Must be 1 or one of ``encoder_strides``.
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        encoder_strides: Sequence[int],
        upsampler: UpsamplerSpec,
        channels: int | Sequence[int] | None = None,
        skips: bool = True,
        fusion: str = "concat",
        refine_convs: int = 2,
        head_stride: int = 1,
    ):
        super().__init__()
        encoder_channels, encoder_strides = list(encoder_channels), list(encoder_strides)
        levels = len(encoder_channels)
        if len(encoder_strides) != levels:
            raise ValueError("encoder_channels and encoder_strides must have the same length")
        if channels is None:
            channels = encoder_channels
        elif isinstance(channels, int):
            channels = [channels] * levels
        channels = list(channels)
        if len(channels) != levels:
            raise ValueError(
                f"decoder.channels has {len(channels)} entries but the backbone has {levels} levels"
            )
        if head_stride != 1 and head_stride not in encoder_strides:
            raise ValueError(
                f"decoder.head_stride={head_stride} must be 1 or one of the backbone strides "
                f"{encoder_strides}"
            )
        # Decode down to the shallowest level whose stride is still >= head_stride.
        stop = min(i for i, s in enumerate(encoder_strides) if s >= head_stride)
        self.stop_level = stop
        self.skips = skips

        stages = []
        in_ch = encoder_channels[-1]
        for i in range(levels - 1, stop, -1):
            factor, rem = divmod(encoder_strides[i], encoder_strides[i - 1])
            if rem or factor < 1:
                raise ValueError(f"backbone strides {encoder_strides} are not integer multiples")
            out_ch = channels[i - 1]
            up = (
                build_upsampler(upsampler, in_ch, out_ch, factor, encoder_channels[i - 1])
                if factor > 1
                else None
            )
            if (
                up is not None
                and declaration(up).needs_pool_indices
                and (out_ch != encoder_channels[i - 1])
            ):
                raise ValueError(
                    f"{type(up).__name__} unpools with the encoder's indices, which carry "
                    f"{encoder_channels[i - 1]} channels at stride {encoder_strides[i - 1]}, "
                    "but the "
                    f"decoder has {out_ch} there: set decoder.channels=null to mirror the encoder"
                )
            stages.append(
                DecoderStage(
                    up,
                    in_ch,
                    encoder_channels[i - 1] if skips else 0,
                    out_ch,
                    fusion,
                    refine_convs,
                )
            )
            in_ch = out_ch
        self.stages = nn.ModuleList(stages)

        self.final_scale = encoder_strides[stop]
        self.final_upsampler = None
        if self.final_scale > 1:
            self.final_upsampler = build_upsampler(upsampler, in_ch, in_ch, self.final_scale)
            if declaration(self.final_upsampler).needs_pool_indices:
                raise ValueError(
                    f"{type(self.final_upsampler).__name__} has no pooling indices for the final "
                    f"x{self.final_scale} step to the input resolution: use a built-in backbone "
                    "with backbone.downsample=maxpool and decoder.head_stride=1"
                )
        self.out_channels = in_ch
        self.output_stride = 1

    def upsamplers(self) -> nn.ModuleList:
        """Every upsampler of the decoder (for parameter counts and profiling)."""
        ups = [stage.upsampler for stage in self.stages if stage.upsampler is not None]
        if self.final_upsampler is not None:
            ups.append(self.final_upsampler)
        return nn.ModuleList(ups)

    def uses_pool_indices(self) -> bool:
        return any(declaration(up).needs_pool_indices for up in self.upsamplers())

    def forward(self, features: Sequence[Tensor], indices: Sequence[Tensor | None]) -> Tensor:
        x = features[-1]
        for stage, level in zip(
            self.stages, range(len(features) - 1, self.stop_level, -1), strict=True
        ):
            guide = features[level - 1]
            x = stage(x, guide if self.skips else None, guide, indices[level])
        if self.final_upsampler is not None:
            x = self.final_upsampler(x)
        return x


class SegNetDecoder(UNetDecoder):
    """SegNet decoder (Badrinarayanan et al., TPAMI 2017): upsample and refine, no skip fusion by
    default, channels mirroring the encoder so ``maxunpool`` can reuse the pooling indices."""

    def __init__(self, *args, skips: bool = False, **kwargs):
        super().__init__(*args, skips=skips, **kwargs)
