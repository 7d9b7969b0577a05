"""CARAFE: content-aware reassembly of features (Wang et al., ICCV 2019)."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from upbench.ops.carafe import carafe, carafe_flops
from upbench.upsamplers._common import check_channels, check_odd_kernel, check_scale
from upbench.upsamplers.base import Upsampler, channel_projection


class CARAFE(Upsampler):
    """CARAFE upsampler, following the paper and mmcv's ``CARAFEPack`` (the official code).

    Wang, Chen, Xu, Liu, Loy, Lin, "CARAFE: Content-Aware ReAssembly of FEatures", ICCV 2019.

    1. Kernel prediction: a 1x1 channel compressor (in -> C_m), a ``kernel_encoder`` x
       ``kernel_encoder`` content encoder (C_m -> group_size * s^2 * k_up^2), pixel shuffle to
       (N, group_size * k_up^2, s*H, s*W), softmax over the k_up^2 taps of each group.
    2. Reassembly: each output pixel is the kernel-weighted sum of the k_up x k_up window around
       its source pixel (``upbench.ops.carafe``), zero padded at the borders.
    3. Only when ``out_channels != in_channels`` (an addition of this project; ``CARAFEPack``
       keeps the channel count): a 1x1 conv after the reassembly.

    Init as the official code: Xavier-uniform compressor and content encoder with zero bias,
    then the content encoder re-drawn from N(0, 0.001^2), so the kernels start close to uniform
    (1 / k_up^2). The added projection keeps PyTorch's default conv init, like the projection
    of every other upsampler in this package.

    Shapes: (N, in_channels, H, W) -> (N, out_channels, s*H, s*W).
    Parameters: (in + 1) * C_m + (C_m * k_enc^2 + 1) * group_size * s^2 * k_up^2
    [+ (in + 1) * out if in != out]; 257*64 + 577*100 = 74,148 for in = out = 256, s = 2.

    Args:
        in_channels: channels of the input feature map (divisible by ``group_size``).
        out_channels: channels of the output feature map.
        scale: integer upsampling factor s.
        compressed_channels: C_m, channels after the compressor (64 in the paper).
        kernel_encoder: odd size k_encoder of the content encoder (3 in the paper).
        kernel_up: odd size k_up of the reassembly kernels (5 in the paper).
        group_size: number of channel groups, each with its own predicted kernels (1 in the
            paper's default).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        scale: int,
        compressed_channels: int = 64,
        kernel_encoder: int = 3,
        kernel_up: int = 5,
        group_size: int = 1,
    ) -> None:
        super().__init__()
        check_channels(in_channels, out_channels)
        check_channels(compressed_channels, group_size)
        self.scale = check_scale(scale)
        self.k_up = check_odd_kernel(kernel_up, "kernel_up")
        check_odd_kernel(kernel_encoder, "kernel_encoder")
        if in_channels % group_size:
            raise ValueError(
                f"CARAFE: group_size={group_size} must divide in_channels={in_channels}; "
                "use a divisor of the channel count (1 shares one kernel across all channels)"
            )
        self.group_size = group_size
        self.channel_compressor = nn.Conv2d(in_channels, compressed_channels, 1)
        self.content_encoder = nn.Conv2d(
            compressed_channels,
            group_size * scale * scale * kernel_up * kernel_up,
            kernel_encoder,
            padding=kernel_encoder // 2,
        )
        self.proj = channel_projection(in_channels, out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The added projection keeps PyTorch's default init, as in every upsampler here.
        for conv in (self.channel_compressor, self.content_encoder):
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
        nn.init.normal_(self.content_encoder.weight, std=0.001)

    def kernels(self, x: Tensor) -> Tensor:
        """Normalised reassembly kernels (N, group_size * k_up^2, s*H, s*W) for x (N, in, H, W);
        channel g * k_up^2 + dy * k_up + dx weighs tap (dy, dx) of group g."""
        logits = F.pixel_shuffle(self.content_encoder(self.channel_compressor(x)), self.scale)
        n, _, h, w = logits.shape
        taps = self.k_up * self.k_up
        return logits.view(n, self.group_size, taps, h, w).softmax(2).view(n, -1, h, w)

    def analytic_flops(self, x_shape: Sequence[int]) -> dict[str, int]:
        n, c, h, w = x_shape
        s = self.scale
        return {"carafe_reassembly": carafe_flops(n, c, self.k_up, s * h, s * w)}

    def forward(self, x: Tensor) -> Tensor:
        # Under autocast the encoder may return a lower precision than x; the op needs one dtype.
        kernels = self.kernels(x).to(x.dtype)
        out = carafe(x, kernels, self.k_up, self.group_size, self.scale)
        return self.proj(out)
