"""Argument checks and resampling helpers shared by the upsamplers in this package."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from upbench.validation import is_int, positive_int

INTERPOLATION_MODES = ("nearest", "bilinear", "bicubic", "area")
# align_corners is only meaningful for these modes; passing it for the others raises in PyTorch.
_ALIGN_CORNERS_MODES = ("bilinear", "bicubic")


def check_channels(in_channels: int, out_channels: int) -> None:
    positive_int("in_channels", in_channels)
    positive_int("out_channels", out_channels)


def check_scale(scale: int) -> int:
    """Return ``scale`` if it is an int >= 1, else raise (float factors would give ragged sizes)."""
    return positive_int("scale", scale)


def check_mode(mode: str) -> str:
    if mode not in INTERPOLATION_MODES:
        raise ValueError(f"mode must be one of {INTERPOLATION_MODES}, got {mode!r}")
    return mode


def check_odd_kernel(kernel_size: int, name: str = "kernel_size") -> int:
    """A 'same' convolution needs an odd kernel so that padding k // 2 keeps H and W (and a
    reassembly window needs a centre). ``name``: the option as the user sets it."""
    if not is_int(kernel_size) or kernel_size % 2 != 1:
        raise ValueError(
            f"{name} must be odd so the window has a centre and keeps H and W, got "
            f"{kernel_size!r}; set upsampler.{name} to an odd size (3, 5, ...)"
        )
    return kernel_size


def resize(x: Tensor, scale: int, mode: str) -> Tensor:
    """Upsample ``x`` (N, C, H, W) by an integer factor to (N, C, scale*H, scale*W)."""
    align_corners = False if mode in _ALIGN_CORNERS_MODES else None
    return F.interpolate(x, scale_factor=scale, mode=mode, align_corners=align_corners)
