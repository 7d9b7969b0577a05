"""Stage and downsampling plumbing shared by the built-in backbones (ResNet, Inception, MobileNet).

A built-in backbone is a full-resolution stem followed by ``num_stages`` stages::

    features[0] = stem(x)                      # 3x3 conv-BN-ReLU, stride 1, ``width`` channels
    features[i] = stage_i(features[i - 1])     # i = 1 .. num_stages, ``width * 2**i`` channels

Each stage halves the resolution with one of three downsampling methods
(max pooling, strided convolution, average pooling), except the last ``dilate_last`` stages,
which keep the resolution and dilate their convolutions by 2, 4, ... instead (DeepLab, Chen et al.
TPAMI 2018): a dilated KxK convolution covers ``K_eff = D(K - 1) + 1`` pixels, so the receptive
field keeps growing without losing resolution.

The families differ only in their block, given as a :data:`BlockFactory`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from upbench.backbones.base import BackboneOutput
from upbench.layers import conv_bn_act
from upbench.validation import is_int, positive_int

DOWNSAMPLE_MODES = ("maxpool", "stride", "avgpool")

BlockFactory = Callable[[int, int, int, int], nn.Module]
"""``block(in_channels, out_channels, stride, dilation) -> nn.Module`` mapping
(N, in_channels, H, W) to (N, out_channels, H / stride, W / stride)."""


class Stage(nn.Module):
    """Optional pooling followed by ``depth`` blocks.

    ``forward``: (N, C_in, H, W) -> ``(features, indices)`` with features (N, C_out, H / s, W / s)
    and ``indices`` the (N, C_in, H / 2, W / 2) argmax positions of the max pooling (``None`` when
    the stage does not max-pool).
    """

    def __init__(self, pool: nn.Module | None, blocks: nn.Sequential):
        super().__init__()
        self.pool = pool
        self.blocks = blocks

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        indices = None
        if isinstance(self.pool, nn.MaxPool2d):
            x, indices = self.pool(x)
        elif self.pool is not None:
            x = self.pool(x)
        return self.blocks(x), indices


class StagedBackbone(nn.Module):
    """Generic stem + stages backbone following :mod:`upbench.backbones.base`.

    Args:
        block: factory of the family's block, see :data:`BlockFactory`.
        in_channels: channels of the input image.
        width: channels of the stem; stage ``i`` has ``width * 2**i``.
        depth: blocks per stage, one int for all stages or one per stage.
        num_stages: number of stages (x2 downsamplings unless dilated); the output stride is
            ``2 ** (num_stages - dilate_last)``.
        downsample: ``"maxpool"`` (``MaxPool2d(2, 2, return_indices=True)`` before the stage's
            blocks; its indices are returned for SegNet unpooling), ``"stride"`` (stride-2 first
            block) or ``"avgpool"`` (``AvgPool2d(2)`` before the blocks).
        dilate_last: number of last stages that keep the resolution with dilation 2, 4, ...

    ``forward``: (N, in_channels, H, W) -> :class:`BackboneOutput` with ``num_stages + 1``
    features; ``features[i]`` is (N, out_channels[i], H / strides[i], W / strides[i]) for H, W
    divisible by the output stride.
    """

    def __init__(
        self,
        block: BlockFactory,
        in_channels: int = 3,
        width: int = 16,
        depth: int | Sequence[int] = 1,
        num_stages: int = 4,
        downsample: str = "stride",
        dilate_last: int = 0,
    ):
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("width", width),
            ("num_stages", num_stages),
        ):
            positive_int(f"backbone.{name}", value)
        if downsample not in DOWNSAMPLE_MODES:
            raise ValueError(
                f"backbone.downsample must be one of {DOWNSAMPLE_MODES}, got {downsample!r}"
            )
        if not is_int(dilate_last):
            raise ValueError(f"backbone.dilate_last must be an integer, got {dilate_last!r}")
        if not 0 <= dilate_last < num_stages:
            raise ValueError(
                f"backbone.dilate_last={dilate_last} must be in [0, num_stages - 1 = "
                f"{num_stages - 1}] so that at least one stage downsamples"
            )
        depths = [depth] * num_stages if isinstance(depth, int) else list(depth)
        if len(depths) != num_stages:
            raise ValueError(
                f"backbone.depth has {len(depths)} entries but num_stages={num_stages}: give one "
                "int or one entry per stage"
            )
        for d in depths:
            positive_int("backbone.depth", d)

        self.provides_pool_indices = downsample == "maxpool"
        self.stem = conv_bn_act(in_channels, width, 3)
        self.out_channels = [width]
        self.strides = [1]
        stages = []
        dilation = 1
        for i, stage_depth in enumerate(depths, start=1):
            c_in, c_out = self.out_channels[-1], width * 2**i
            dilated = i > num_stages - dilate_last
            if dilated:
                dilation *= 2
            pool: nn.Module | None = None
            first_stride = 1
            if not dilated:
                if downsample == "maxpool":
                    pool = nn.MaxPool2d(2, 2, return_indices=True)
                elif downsample == "avgpool":
                    pool = nn.AvgPool2d(2)
                else:
                    first_stride = 2
            blocks = nn.Sequential(
                *(
                    block(c_in if j == 0 else c_out, c_out, first_stride if j == 0 else 1, dilation)
                    for j in range(stage_depth)
                )
            )
            stages.append(Stage(pool, blocks))
            self.out_channels.append(c_out)
            self.strides.append(self.strides[-1] * (1 if dilated else 2))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: Tensor) -> BackboneOutput:
        features = [self.stem(x)]
        indices: list[Tensor | None] = [None]
        for stage in self.stages:
            feature, index = stage(features[-1])
            features.append(feature)
            indices.append(index)
        return BackboneOutput(features, indices)
