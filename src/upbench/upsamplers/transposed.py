"""Transposed-convolution ("deconvolution") upsampler with stride = scale."""

from __future__ import annotations

from torch import Tensor, nn

from upbench.upsamplers._common import check_channels, check_scale
from upbench.upsamplers.base import ANY_SCALE, Scales, Upsampler
from upbench.validation import non_negative_int, positive_int


def solve_padding(
    stride: int,
    kernel_size: int,
    dilation: int = 1,
    padding: int | None = None,
    output_padding: int | None = None,
) -> tuple[int, int]:
    """Return ``(padding, output_padding)`` such that a transposed conv maps H to ``stride * H``.

    From H_out = (H_in - 1) S - 2P + D (K - 1) + output_padding + 1 (PyTorch ``ConvTranspose2d``;
    Dumoulin & Visin, "A guide to convolution arithmetic for deep learning", 2016), H_out = S H_in
    for every H_in exactly when 2P - output_padding = D (K - 1) + 1 - S. Missing values are
    solved for (smallest padding first); given values are checked.
    """
    excess = dilation * (kernel_size - 1) + 1 - stride
    if padding is None and output_padding is None:
        padding = max(0, (excess + 1) // 2)
        output_padding = 2 * padding - excess
    elif output_padding is None:
        output_padding = 2 * padding - excess
    elif padding is None:
        padding = (excess + output_padding) // 2
        if (excess + output_padding) % 2 or padding < 0:
            raise ValueError(
                f"no padding gives an output of exactly {stride}*H with "
                f"output_padding={output_padding}, kernel_size={kernel_size}, "
                f"dilation={dilation}, stride={stride}; leave output_padding null to solve for it"
            )
    if output_padding < 0:
        raise ValueError(
            f"padding={padding} is too small for kernel_size={kernel_size}, dilation={dilation}, "
            f"stride={stride}: the output would be larger than {stride}*H; use padding >= "
            f"{(excess + 1) // 2} or leave it null"
        )
    return padding, output_padding


def _covers_stride(kernel_size: int, dilation: int, stride: int) -> bool:
    """Output position p gets a tap from kernel index k iff p = i*S + k*D for some input i, so
    every residue of p mod S must be hit by some k*D mod S, else a lattice of outputs only ever
    sees the bias (holes)."""
    return {(dilation * k) % stride for k in range(kernel_size)} == set(range(stride))


class TransposedConv(Upsampler):
    """Learned upsampling by a transposed convolution with ``stride = scale``.

    Long et al., "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015;
    Zeiler et al., "Deconvolutional Networks", CVPR 2010. When the kernel size is not a multiple
    of the stride, neighbouring outputs receive different numbers of kernel taps and the layer
    is prone to checkerboard artifacts (Odena, Dumoulin & Olah, Distill 2016).

    Shapes: (N, in_channels, H, W) -> (N, out_channels, H_out, W_out) with
    H_out = (H - 1) S - 2P + D (K - 1) + output_padding + 1, which equals ``scale * H`` whenever
    at least one of ``padding`` / ``output_padding`` is left as None (it is then solved for).
    If both are given they are used as is (the output may then not be ``scale * H``).
    Parameters: K*K*in_channels*out_channels + out_channels (with bias).

    Args:
        in_channels: channels of the input feature map.
        out_channels: channels of the output feature map.
        scale: integer upsampling factor, used as the stride S.
        kernel_size: K; None means 2 * scale (K = 4, P = 1 at scale 2, the FCN/DCGAN choice).
        padding: P, or None to compute it.
        output_padding: extra rows/cols on one side, or None to compute it; must be
            < max(stride, dilation) (a PyTorch constraint).
        dilation: D, spacing between kernel taps.
        bias: whether the layer has a bias.

    Raises:
        ValueError: if the combination is impossible, or if some output pixels would receive no
            kernel tap at all (holes, e.g. K < S with D = 1) - use a larger kernel then.
    """

    @classmethod
    def supported_scales(
        cls, in_channels: int, kernel_size: int | None = None, dilation: int = 1, **options
    ) -> Scales:
        if kernel_size is None:  # 2 * scale taps always cover the stride
            return ANY_SCALE
        return Scales(
            f"strides without holes for kernel_size={kernel_size}, dilation={dilation}",
            lambda stride: _covers_stride(kernel_size, dilation, stride),
        )

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        scale: int,
        kernel_size: int | None = None,
        padding: int | None = None,
        output_padding: int | None = None,
        dilation: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        check_channels(in_channels, out_channels)
        stride = check_scale(scale)
        if kernel_size is None:
            kernel_size = 2 * stride
        positive_int("kernel_size", kernel_size)
        positive_int("dilation", dilation)
        for name, value in (("padding", padding), ("output_padding", output_padding)):
            if value is not None:
                non_negative_int(name, value)
        if not _covers_stride(kernel_size, dilation, stride):
            raise ValueError(
                f"kernel_size={kernel_size} with dilation={dilation} leaves holes at stride "
                f"(scale) {stride}: some output pixels receive no kernel tap; use kernel_size >= "
                f"scale (e.g. kernel_size: null for 2*scale, as in conf/upsampler/transposed.yaml)"
            )
        padding, output_padding = solve_padding(
            stride, kernel_size, dilation, padding, output_padding
        )
        if output_padding >= max(stride, dilation):
            raise ValueError(
                f"output_padding={output_padding} must be smaller than max(stride, dilation) = "
                f"{max(stride, dilation)} (a ConvTranspose2d limit); with kernel_size="
                f"{kernel_size}, dilation={dilation}, stride={stride} change padding or kernel"
            )
        self.conv = nn.ConvTranspose2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            output_padding=output_padding,
            dilation=dilation,
            bias=bias,
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)
