"""MobileNet blocks (Howard et al. 2017; Sandler et al. 2018): the lecture's parameter counts of
the depthwise separable convolution, inverted residuals with linear bottlenecks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from upbench.backbones.mobilenet import DepthwiseSeparableConv, InvertedResidual, MobileNet


def _conv_weights(module: nn.Module) -> int:
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.bias is None for c in convs)  # BN follows every conv
    return sum(c.weight.numel() for c in convs)


def test_lecture_example_32_to_64():
    standard = nn.Conv2d(32, 64, 3, bias=False)
    separable = DepthwiseSeparableConv(32, 64, kernel_size=3)
    assert standard.weight.numel() == 18_432
    assert _conv_weights(separable) == 288 + 2_048 == 2_336
    # Plus the two BNs' affine parameters (32 after the depthwise, 64 after the pointwise conv).
    assert sum(p.numel() for p in separable.parameters()) == 2_336 + 2 * 32 + 2 * 64
    assert round(18_432 / 2_336) == 8  # the lecture's "about 8x fewer"


@pytest.mark.parametrize("version", [1, 2])
def test_separable_convs_inside_a_backbone_follow_the_formula(version):
    net = MobileNet(width=4, depth=2, num_stages=3, version=version, expand_ratio=3)
    seen = {}
    hooks = [
        m.register_forward_hook(
            lambda mod, i, o: seen.__setitem__(mod, (i[0].shape[1], o.shape[1]))
        )
        for m in net.modules()
        if isinstance(m, DepthwiseSeparableConv)
    ]
    net(torch.randn(1, 3, 16, 16))
    for h in hooks:
        h.remove()
    assert len(seen) == 6
    for module, (c_in, c_out) in seen.items():
        k = module.depthwise[0].kernel_size[0]
        assert module.depthwise[0].groups == c_in
        assert _conv_weights(module) == k * k * c_in + c_in * c_out


@pytest.mark.parametrize(("in_ch", "out_ch", "stride"), [(8, 8, 1), (8, 16, 1), (8, 8, 2)])
def test_inverted_residual_identity_only_for_equal_shapes(in_ch, out_ch, stride):
    torch.manual_seed(0)
    block = InvertedResidual(in_ch, out_ch, stride=stride, expand_ratio=4)
    assert block.expand[0].out_channels == 4 * in_ch
    nn.init.zeros_(block.separable.pointwise[1].weight)  # the linear projection's BN
    x = torch.randn(2, in_ch, 8, 8)
    y = block(x)
    if (in_ch, stride) == (out_ch, 1):
        torch.testing.assert_close(y, x, rtol=0, atol=0)
    else:
        assert y.shape == (2, out_ch, 8 // stride, 8 // stride) and not y.any()


def test_v2_bottleneck_is_linear_and_v1_output_is_rectified():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 8, 8)
    assert (InvertedResidual(8, 16)(x) < 0).any()
    assert (DepthwiseSeparableConv(8, 16)(x) >= 0).all()
