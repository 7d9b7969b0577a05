"""FADE: fusing the assets of decoder and encoder (Lu et al., ECCV 2022 / IJCV 2024), guided."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from upbench.ops.carafe import carafe, carafe_flops
from upbench.upsamplers._common import check_channels, check_odd_kernel
from upbench.upsamplers.base import Scales, Upsampler, channel_projection, only

_SCALE = 2


class FADE(Upsampler):
    """FADE, and FADE-Lite with ``lite=True``, following the official pure-PyTorch code
    (github.com/poppinace/fade, ``FADE_L2H.py``, the version of its SegFormer experiments).

    Lu, Liu, Fu, Cao, "FADE: Fusing the Assets of Decoder and Encoder for Task-Agnostic
    Upsampling", ECCV 2022; extended in IJCV 2024.

    With x the decoder feature D (N, C, H, W) and the guide the encoder feature E
    (N, C_e, 2H, 2W):

    1. Semi-shift kernel generation: one content encoder conv W (3x3) is applied to the
       compressed encoder feature at high resolution and to the compressed decoder feature at low
       resolution, and the two are added after nearest x2 upsampling of the second::

           logits = W * (P_e E) + up_nearest(W * (P_d D))      (N, k_up^2, 2H, 2W)

       (P_e, P_d: 1x1 compressors to ``embedding_dim`` channels, P_d without bias). As in the
       official code, W's bias enters both terms, i.e. twice.
    2. Kernels K = softmax over the k_up^2 taps; the decoder feature is reassembled with them
       as in CARAFE (``upbench.ops.carafe``, zero padding): R = CARAFE(D, K).
    3. Gate G = sigmoid(up_nearest(g D)), g a 1x1 conv C -> 1; output G * E + (1 - G) * R.

    FADE-Lite (``lite=True``) compresses both features straight to k_up^2 channels and makes W a
    depthwise 3x3 conv on them.

    Init as the official code: every conv Xavier-uniform with zero bias. The official module
    keeps one channel count (C_e = C = output). Only where they differ, this project adds 1x1
    projections (PyTorch's default init, as every upsampler here): ``guide_proj`` on E and
    ``proj`` on R, to ``out_channels``.

    Shapes: x (N, in_channels, H, W), guide (N, guide_channels, 2H, 2W)
    -> (N, out_channels, 2H, 2W). Scale 2 only (the semi-shift pairs one low-resolution pixel
    with a 2x2 block).
    Parameters (in = guide = out = C, m = embedding_dim, k = k_up): FADE (C + 1) + (C*m + m)
    + C*m + (9*m*k^2 + k^2) = 47,514 for C = 256, m = 64, k = 5; FADE-Lite (C + 1)
    + (C*k^2 + k^2) + C*k^2 + (9*k^2 + k^2).

    Args:
        in_channels: channels C of the decoder feature x.
        out_channels: channels of the output.
        scale: must be 2.
        guide_channels: channels C_e of the encoder feature.
        embedding_dim: m, channels after the compressors (64 in the paper; unused when lite).
        kernel_up: odd size k_up of the reassembly kernels (5).
        lite: FADE-Lite's depthwise kernel generator.
    """

    needs_guide = True

    @classmethod
    def supported_scales(cls, in_channels: int, **options) -> Scales:
        return only(_SCALE)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        scale: int,
        guide_channels: int,
        embedding_dim: int = 64,
        kernel_up: int = 5,
        lite: bool = False,
    ) -> None:
        super().__init__()
        check_channels(in_channels, out_channels)
        check_channels(guide_channels, embedding_dim)
        if scale != _SCALE:
            raise ValueError(
                f"FADE only supports scale={_SCALE} (its semi-shift pairs each decoder pixel "
                f"with a 2x2 encoder block), got scale={scale!r}; use a decoder whose every "
                "step is x2 (decoder=segformer or fpn) or another upsampler"
            )
        self.scale = scale
        self.k_up = check_odd_kernel(kernel_up, "kernel_up")
        taps = kernel_up * kernel_up
        compressed = taps if lite else embedding_dim
        self.gate = nn.Conv2d(in_channels, 1, 1)
        self.compressor_en = nn.Conv2d(guide_channels, compressed, 1)
        self.compressor_de = nn.Conv2d(in_channels, compressed, 1, bias=False)
        self.content_encoder = nn.Conv2d(compressed, taps, 3, padding=1, groups=taps if lite else 1)
        for conv in (self.gate, self.compressor_en, self.compressor_de, self.content_encoder):
            nn.init.xavier_uniform_(conv.weight)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
        self.guide_proj = channel_projection(guide_channels, out_channels)
        self.proj = channel_projection(in_channels, out_channels)

    def kernels(self, x: Tensor, guide: Tensor) -> Tensor:
        """Normalised reassembly kernels (N, k_up^2, 2H, 2W): the semi-shift conv, softmax."""
        low = self.content_encoder(self.compressor_de(x))
        logits = self.content_encoder(self.compressor_en(guide)) + F.interpolate(
            low, scale_factor=_SCALE, mode="nearest"
        )
        return logits.softmax(1)

    def analytic_flops(self, x_shape: Sequence[int]) -> dict[str, int]:
        n, c, h, w = x_shape
        return {"carafe_reassembly": carafe_flops(n, c, self.k_up, _SCALE * h, _SCALE * w)}

    def forward(self, x: Tensor, guide: Tensor) -> Tensor:
        if guide.shape[-2:] != (_SCALE * x.shape[-2], _SCALE * x.shape[-1]):
            raise ValueError(
                f"FADE: the guide must be at twice the size of x {tuple(x.shape[-2:])}, got "
                f"{tuple(guide.shape[-2:])}"
            )
        gate = torch.sigmoid(F.interpolate(self.gate(x), scale_factor=_SCALE, mode="nearest"))
        # Under autocast the convs may return a lower precision than x; the op needs one dtype.
        reassembled = carafe(x, self.kernels(x, guide).to(x.dtype), self.k_up, 1, _SCALE)
        return gate * self.guide_proj(guide) + (1 - gate) * self.proj(reassembled)
