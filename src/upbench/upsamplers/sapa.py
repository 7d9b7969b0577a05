"""SAPA: similarity-aware point affiliation (Lu et al., NeurIPS 2022), SAPA-B, guided."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from upbench.ops.carafe import carafe, carafe_flops
from upbench.upsamplers._common import check_channels, check_odd_kernel, check_scale
from upbench.upsamplers.base import Upsampler, channel_projection


class SAPA(Upsampler):
    """SAPA-B, following the official code (github.com/tiny-smart/sapa, ``sapa_base.py``).

    Lu, Liu, Ye, Fu, Liu, Cao, "SAPA: Similarity-Aware Point Affiliation for Feature
    Upsampling", NeurIPS 2022.

    With x the low-resolution feature X (N, C, H, W) and the guide the high-resolution feature
    Y (N, C_y, sH, sW): Q = q(GN(Y)) and K = k(GN(X)), 1x1 convs to ``embedding_dim``; each
    output pixel p, whose source pixel is p // s, weighs the k_up x k_up window of X around it
    by the softmax of the similarities::

        a[p, t] = <Q[p], K[p // s + t - k_up // 2]>,   out[p] = sum_t softmax_t(a[p])[t] X[...]

    Outside the map the key and the value are zero (as the official CUDA kernels: an outside
    tap gets similarity 0, so it still takes part in the softmax, and contributes nothing).
    Written in plain PyTorch for CPU and GPU (the official kernels are CUDA-only and do not
    build on torch 2.x): the similarities are summed tap by tap from shifted views, so nothing
    of size embedding_dim * k_up^2 is kept for backward, and the reassembly is
    ``upbench.ops.carafe``.

    GroupNorm uses 32 groups, as the official code; a channel count that 32 does not divide
    uses gcd(32, C) groups (16 channels: 16 groups). Init as the official code: q and k
    N(0, 0.02^2) with zero bias, GroupNorm weight 1 and bias 0. The official module keeps X's
    channel count; only when in != out, this project adds a 1x1 projection (PyTorch's default
    init, as every upsampler here).

    Shapes: x (N, in_channels, H, W), guide (N, guide_channels, sH, sW)
    -> (N, out_channels, sH, sW).
    Parameters: 2*C_y + 2*C + (C_y + 1)*m + (C + 1)*m [+ (C + 1)*out if C != out];
    m = embedding_dim.

    Args:
        in_channels: channels C of x.
        out_channels: channels of the output.
        scale: integer upsampling factor s.
        guide_channels: channels C_y of the guide.
        embedding_dim: m (32 in SAPA-B).
        kernel_up: odd window size k_up (5).
        norm_groups: GroupNorm groups (32).
    """

    needs_guide = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        scale: int,
        guide_channels: int,
        embedding_dim: int = 32,
        kernel_up: int = 5,
        norm_groups: int = 32,
    ) -> None:
        super().__init__()
        check_channels(in_channels, out_channels)
        check_channels(guide_channels, embedding_dim)
        check_channels(norm_groups, norm_groups)
        self.scale = check_scale(scale)
        self.k_up = check_odd_kernel(kernel_up, "kernel_up")
        self.norm_guide = nn.GroupNorm(math.gcd(norm_groups, guide_channels), guide_channels)
        self.norm_x = nn.GroupNorm(math.gcd(norm_groups, in_channels), in_channels)
        self.query = nn.Conv2d(guide_channels, embedding_dim, 1)
        self.key = nn.Conv2d(in_channels, embedding_dim, 1)
        for conv in (self.query, self.key):
            nn.init.normal_(conv.weight, std=0.02)
            nn.init.zeros_(conv.bias)
        self.proj = channel_projection(in_channels, out_channels)

    def similarities(self, x: Tensor, guide: Tensor) -> Tensor:
        """Affinities a (N, k_up^2, sH, sW), channel t = dy * k_up + dx for tap (dy, dx)."""
        query = self.query(self.norm_guide(guide))
        key = self.key(self.norm_x(x))
        n, m, h, w = key.shape
        s, r = self.scale, self.k_up // 2
        # (N, m, H, s, W, s): the s x s block of queries that share source pixel (y, x).
        query = query.view(n, m, h, s, w, s)
        if torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting():
            # One batched product over the unfolded key windows (k_up^2 x the low-resolution
            # key, held by ONNX Runtime only during inference): the k_up^2 shifted products
            # below each cost the exporter's symbolic tracing as much as the rest of a network.
            windows = F.unfold(key, self.k_up, padding=r).view(n, m, self.k_up**2, h, w)
            similarity = torch.einsum("nmthw,nmhawb->nthawb", windows, query)
            return similarity.reshape(n, self.k_up**2, s * h, s * w)
        padded = F.pad(key, (r, r, r, r))
        taps = [
            (query * padded[:, :, dy : dy + h, None, dx : dx + w, None]).sum(1)
            for dy in range(self.k_up)
            for dx in range(self.k_up)
        ]
        return torch.stack(taps, 1).view(n, self.k_up * self.k_up, s * h, s * w)

    def analytic_flops(self, x_shape: Sequence[int]) -> dict[str, int]:
        n, c, h, w = x_shape
        s, taps = self.scale, self.k_up * self.k_up
        # Each of the k_up^2 similarities of an output pixel is an embedding_dim dot product.
        similarity = 2 * self.query.out_channels * taps * n * s * h * s * w
        return {
            "sapa_similarity": similarity,
            "carafe_reassembly": carafe_flops(n, c, self.k_up, s * h, s * w),
        }

    def forward(self, x: Tensor, guide: Tensor) -> Tensor:
        if guide.shape[-2:] != (self.scale * x.shape[-2], self.scale * x.shape[-1]):
            raise ValueError(
                f"SAPA: the guide must be at {self.scale} x the size of x "
                f"{tuple(x.shape[-2:])}, got {tuple(guide.shape[-2:])}"
            )
        attention = self.similarities(x, guide).softmax(1).to(x.dtype)
        return self.proj(carafe(x, attention, self.k_up, 1, self.scale))
