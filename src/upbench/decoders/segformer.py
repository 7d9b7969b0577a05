"""SegFormer's all-MLP head (Xie et al., NeurIPS 2021) with swappable x2 upsamplers.

The protocol of the upsampler papers (FADE, SAPA, DySample: the SegFormer-B1 results on
ADE20K): the bilinear resizes of the head that bring every stage to the finest stride are
replaced by x2 upsamplers, three for stride 32, two for 16, one for 8; a guided upsampler is
guided by the projected feature of the next finer stage (the mmseg fork of poppinace/fade,
``segformer/segformer_head.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from upbench.decoders._pyramid import LevelProjections, x2_steps
from upbench.layers import conv_bn_act
from upbench.upsamplers.base import UpsamplerSpec, build_upsampler, declaration, upsample

_NAME = "segformer"


class SegFormerDecoder(nn.Module):
    """All-MLP head: 1x1 projection of each stage, x2 upsampling to the finest stage,
    concatenation, 1x1 conv-BN-ReLU fusion, dropout. The model's 1x1 classifier follows and its
    logits are resized (bilinear) to the input, as in SegFormer.

    With an interpolation (``is_interpolation``, e.g. ``upsampler=bilinear``) each stage is
    resized in one step of its whole factor, so the head is exactly the plain SegFormer head;
    any other upsampler gets the chain of x2 steps. The stages are concatenated deepest first,
    as the official head does.

    Shapes: the backbone's features (shallow to deep) -> (N, channels, H / s0, W / s0), s0 the
    stride of the finest stage read (``output_stride``).

    Args:
        encoder_channels: channels of the backbone features, shallow to deep.
        encoder_strides: their strides.
        upsampler: Hydra config (``_target_``) or factory of the x2 upsamplers.
        channels: the head's embedding dimension (256 in SegFormer-B1; small on CPU).
        num_levels: how many of the deepest features the head reads (4 in SegFormer).
        dropout: Dropout2d before the classifier (0.1 in SegFormer).
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        encoder_strides: Sequence[int],
        upsampler: UpsamplerSpec,
        channels: int = 64,
        num_levels: int = 4,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.project = LevelProjections(
            encoder_channels, encoder_strides, upsampler, channels, num_levels, _NAME
        )
        strides = self.project.strides
        declared = declaration(upsampler)
        # The guide of a x2 step to stride t is the projected stage at stride t (the first one
        # there, when a dilated backbone repeats a stride).
        level_at = {stride: strides.index(stride) for stride in strides}
        self.chains = nn.ModuleList()
        self.guides: list[list[int]] = []
        for stride in strides:
            steps = x2_steps(strides[0], stride, _NAME)
            if declared.is_interpolation and steps:
                chain, guides = [build_upsampler(upsampler, channels, channels, 2**steps)], [0]
            else:
                targets = [stride // 2 ** (i + 1) for i in range(steps)]
                missing = [t for t in targets if t not in level_at]
                if declared.needs_guide and missing:
                    raise ValueError(
                        f"{declared.name} is guided by the stage at the stride it upsamples to, "
                        f"but the backbone has no stage at stride {missing[0]} (strides "
                        f"{strides}): use a non-guided upsampler or decoder=unet"
                    )
                chain = [
                    build_upsampler(upsampler, channels, channels, 2, channels) for _ in targets
                ]
                guides = [level_at.get(t, 0) for t in targets]
            self.chains.append(nn.ModuleList(chain))
            self.guides.append(guides)
        self.fuse = conv_bn_act(channels * num_levels, channels, 1)
        self.dropout = nn.Dropout2d(dropout)
        self.out_channels = channels
        self.output_stride = strides[0]

    def upsamplers(self) -> nn.ModuleList:
        return nn.ModuleList(up for chain in self.chains for up in chain)

    def uses_pool_indices(self) -> bool:
        return False

    def forward(self, features: Sequence[Tensor], indices: Sequence[Tensor | None]) -> Tensor:
        projected = self.project(features)
        resized = []
        for x, chain, guides in zip(projected, self.chains, self.guides, strict=True):
            for up, guide in zip(chain, guides, strict=True):
                x = upsample(up, x, guide=projected[guide])
            resized.append(x)
        fused = self.fuse(torch.cat(resized[::-1], dim=1))
        return self.dropout(fused)
