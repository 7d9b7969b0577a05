"""Stepwise upsampler: repeated x2 steps of an inner upsampler, each refined by conv-BN-ReLU."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

from hydra.utils import instantiate
from torch import Tensor, nn

from upbench.upsamplers._common import check_channels
from upbench.upsamplers.base import POWERS_OF_TWO, Scales, Upsampler, declaration
from upbench.upsamplers.interpolate import Interpolation
from upbench.validation import is_int

UpsamplerFactory = Callable[..., nn.Module]
_STEP = 2


def _as_factory(inner: Mapping | UpsamplerFactory | None) -> UpsamplerFactory:
    """Normalise ``inner`` to a callable taking keywords, the convention of the decoders."""
    if inner is None:
        return functools.partial(Interpolation, mode="bilinear")
    if isinstance(inner, Mapping):
        if "_target_" not in inner:
            raise ValueError(
                f"inner must be a config with a _target_ (e.g. _target_: "
                f"upbench.upsamplers.resize_conv.ResizeConv), got keys {list(inner)}"
            )
        return functools.partial(instantiate, inner)
    if callable(inner):
        return inner
    raise TypeError(
        f"inner must be None, a mapping with _target_, or a callable "
        f"factory(in_channels=..., out_channels=..., scale=...); got {type(inner).__name__}"
    )


class _Step(nn.Sequential):
    """One x2 step: inner upsampler, then 3x3 conv + BN + ReLU at the new resolution."""

    def __init__(self, up: nn.Module, channels: int) -> None:
        # No conv bias: the following BatchNorm's shift makes it redundant.
        super().__init__(
            up,
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )


class Stepwise(Upsampler):
    """Reach x4 / x8 by repeated x2 upsampling steps (progressive upsampling).

    Each step is ``inner(c_in, c_out, 2)`` followed by a 3x3 conv + BatchNorm + ReLU, so detail
    is restored progressively instead of in one large jump, as in the decoders of U-Net
    (Ronneberger et al., MICCAI 2015) and LapSRN (Lai et al., CVPR 2017). Channels go
    in_channels -> out_channels in the first step and stay out_channels afterwards.

    Shapes: (N, in_channels, H, W) -> (N, out_channels, scale*H, scale*W), log2(scale) steps.
    Parameters: sum over steps of inner params + 9*out_channels^2 + 2*out_channels.

    Args:
        in_channels: channels of the input feature map.
        out_channels: channels of the output feature map.
        scale: a power of two >= 2.
        inner: the x2 upsampler of each step - a config mapping with ``_target_`` (instantiated
            here with in_channels, out_channels and scale=2; keep ``_recursive_: false`` on the
            stepwise node so Hydra passes it through un-instantiated), any callable called as
            ``factory(in_channels=..., out_channels=..., scale=2)`` such as an upsampler class or
            a ``functools.partial`` of one, or None for bilinear interpolation.
    """

    @classmethod
    def supported_scales(cls, in_channels: int, **options) -> Scales:
        return POWERS_OF_TWO

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        scale: int,
        inner: Mapping | UpsamplerFactory | None = None,
    ) -> None:
        super().__init__()
        check_channels(in_channels, out_channels)
        if not is_int(scale) or scale < _STEP or scale & (scale - 1):
            raise ValueError(
                f"Stepwise needs scale to be a power of two >= 2 (2, 4, 8, ...), got {scale!r}; "
                f"use resize_conv or transposed for other factors"
            )
        self.scale = scale
        factory = _as_factory(inner)
        steps = []
        for i in range(scale.bit_length() - 1):
            cin = in_channels if i == 0 else out_channels
            up = factory(in_channels=cin, out_channels=out_channels, scale=_STEP)
            declared = declaration(up)
            if declared.needs_pool_indices or declared.needs_guide:
                need = "encoder pool indices" if declared.needs_pool_indices else "a guide"
                raise ValueError(
                    f"{declared.name} needs {need} and cannot be a stepwise inner upsampler "
                    "(its intermediate steps have none); pick one whose forward takes only x"
                )
            steps.append(_Step(up, out_channels))
        self.steps = nn.Sequential(*steps)

    def forward(self, x: Tensor) -> Tensor:
        return self.steps(x)
