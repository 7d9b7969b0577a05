"""DySample: upsampling by learned point sampling (Liu et al., ICCV 2023)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from upbench.upsamplers._common import check_channels, check_scale
from upbench.upsamplers.base import Scales, Upsampler, channel_projection

STYLES = ("lp", "pl")


class DySample(Upsampler):
    """DySample, following the official code (github.com/tiny-smart/dysample).

    Liu, Lu, Fu, Cao, "Learning to Upsample by Learning to Sample", ICCV 2023.

    Every output pixel bilinearly samples the input at its own point: the point of sub-pixel
    (i, j) of source pixel (y, x) is the pixel centre (x + 0.5, y + 0.5) plus the bilinear
    initial position ``init_pos`` ((j - (s-1)/2) / s, (i - (s-1)/2) / s) plus a predicted offset
    (in input pixels). The channels are split into ``groups`` groups, each with its own points.

    Offsets O, (N, 2 * groups * s^2, H, W), channels ordered (x/y, group, i, j):
      - "lp" (linear, then pixel shuffle): a 1x1 conv in -> 2 * groups * s^2 on x;
      - "pl" (pixel shuffle, then linear): pixel_shuffle(x, s), a 1x1 conv in/s^2 -> 2 * groups,
        then pixel_unshuffle back to the input resolution.
    Scope: static O * 0.25 (neighbouring points cannot overlap), or with ``dyscope`` the dynamic
    O * 0.5 * sigmoid(scope conv), the scope conv having the offset conv's shape and no bias.
    Sampling: F.grid_sample(bilinear, align_corners=False, padding_mode="border"). With zero
    offsets this equals bilinear interpolation with align_corners=False.

    Init as the official code: offset conv N(0, 0.001^2) with zero bias, scope conv zero.
    A 1x1 conv after the sampling maps in -> out channels only when they differ (an addition of
    this project; the official module keeps the channel count).

    Shapes: (N, in_channels, H, W) -> (N, out_channels, s*H, s*W).
    Parameters, with c = in (lp) or in / s^2 (pl) and m = 2 * groups * s^2 (lp) or
    2 * groups (pl): c*m + m [+ c*m if dyscope] [+ in*out + out if in != out].

    Args:
        in_channels: channels of the input (divisible by ``groups``, and by s^2 for "pl").
        out_channels: channels of the output.
        scale: integer upsampling factor s.
        style: "lp" (DySample) or "pl" (DySample-S, fewer parameters).
        groups: number of channel groups with their own sampling points (4 in the paper).
        dyscope: dynamic scope factor (DySample+ / DySample-S+).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        scale: int,
        style: str = "lp",
        groups: int = 4,
        dyscope: bool = False,
    ) -> None:
        super().__init__()
        check_channels(in_channels, out_channels)
        self.scale = check_scale(scale)
        if style not in STYLES:
            raise ValueError(f"DySample: style must be one of {STYLES}, got {style!r}")
        if not isinstance(groups, int) or groups < 1 or in_channels % groups:
            raise ValueError(
                f"DySample: groups={groups!r} must be a positive divisor of "
                f"in_channels={in_channels}; set upsampler.groups to a divisor (e.g. 1)"
            )
        if style == "pl" and in_channels % (scale * scale):
            raise ValueError(
                f"DySample style 'pl' pixel-shuffles the input, so in_channels={in_channels} "
                f"must be divisible by scale**2={scale * scale}; use style='lp' instead"
            )
        self.style = style
        self.groups = groups
        conv_in = in_channels // (scale * scale) if style == "pl" else in_channels
        conv_out = 2 * groups if style == "pl" else 2 * groups * scale * scale
        self.offset = nn.Conv2d(conv_in, conv_out, 1)
        self.scope = nn.Conv2d(conv_in, conv_out, 1, bias=False) if dyscope else None
        self.proj = channel_projection(in_channels, out_channels)
        self.register_buffer("init_pos", self._init_pos())
        self.reset_parameters()

    @classmethod
    def supported_scales(cls, in_channels: int, style: str = "lp", **options) -> Scales:
        if style != "pl":
            return super().supported_scales(in_channels)
        return Scales(
            f"scales whose square divides in_channels={in_channels} (style 'pl')",
            lambda scale: in_channels % (scale * scale) == 0,
        )

    def reset_parameters(self) -> None:
        nn.init.normal_(self.offset.weight, std=0.001)
        nn.init.zeros_(self.offset.bias)
        if self.scope is not None:
            # Zero scope logits give sigmoid = 0.5, i.e. the static factor 0.25 at init.
            nn.init.zeros_(self.scope.weight)

    def _init_pos(self) -> Tensor:
        """(1, 2 * groups * s^2, 1, 1): x then y offset of sub-pixel (i, j) from the source
        pixel centre, (j - (s-1)/2) / s and (i - (s-1)/2) / s, repeated for every group."""
        s = self.scale
        h = torch.arange((-s + 1) / 2, (s - 1) / 2 + 1) / s
        grid_y, grid_x = torch.meshgrid(h, h, indexing="ij")
        pos = torch.stack([grid_x, grid_y])  # (2, s, s)
        return pos.repeat(1, self.groups, 1).reshape(1, -1, 1, 1)

    def _offsets(self, x: Tensor) -> Tensor:
        """Offsets O * scope (N, 2 * groups * s^2, H, W) before ``init_pos`` is added."""
        source = F.pixel_shuffle(x, self.scale) if self.style == "pl" else x
        offset = self.offset(source)
        if self.scope is None:
            offset = offset * 0.25
        else:
            offset = offset * self.scope(source).sigmoid() * 0.5
        return F.pixel_unshuffle(offset, self.scale) if self.style == "pl" else offset

    def sample(self, x: Tensor, offset: Tensor) -> Tensor:
        """Sample x (N, C, H, W) at the points given by ``offset`` (N, 2 * groups * s^2, H, W),
        in input pixels relative to the pixel centres; returns (N, C, s*H, s*W)."""
        n, _, h, w = offset.shape
        s = self.scale
        # The grid is built in float32 (float64 for float64 inputs) whatever the input's dtype:
        # bf16 holds no half-integer pixel centre above 128 and no integer above 256, which
        # would put the sampling points of a wide map pixels away from where they belong.
        grid_dtype = torch.promote_types(x.dtype, torch.float32)
        offset = offset.to(grid_dtype).view(n, 2, -1, h, w)
        centres_y, centres_x = torch.meshgrid(
            torch.arange(h, dtype=grid_dtype, device=x.device) + 0.5,
            torch.arange(w, dtype=grid_dtype, device=x.device) + 0.5,
            indexing="ij",
        )
        centres = torch.stack([centres_x, centres_y]).view(1, 2, 1, h, w)
        size = torch.tensor([w, h], dtype=grid_dtype, device=x.device).view(1, 2, 1, 1, 1)
        # grid_sample with align_corners=False puts -1 and 1 on the outer edges of the map.
        coords = 2 * (centres + offset) / size - 1
        coords = F.pixel_shuffle(coords.reshape(n, -1, h, w), s)  # (N, 2 * groups, sH, sW)
        grid = coords.view(n, 2, self.groups, s * h, s * w).permute(0, 2, 3, 4, 1).flatten(0, 1)
        sampled = F.grid_sample(
            x.reshape(n * self.groups, -1, h, w).to(grid_dtype),
            grid,
            mode="bilinear",
            padding_mode="border",
            align_corners=False,
        ).to(x.dtype)
        return sampled.view(n, -1, s * h, s * w)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.sample(x, self._offsets(x) + self.init_pos))
