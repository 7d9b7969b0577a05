"""Dilation (DeepLab) grows the receptive field as K_eff = D(K - 1) + 1 predicts while keeping the
resolution. Receptive fields are measured empirically: the span of the input rows on which the
gradient of one output pixel is non-zero."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tests.backbones.builtin_cases import build
from upbench.backbones.mobilenet import DepthwiseSeparableConv
from upbench.backbones.resnet import basic_block


def _make_monotone(net: nn.Module) -> nn.Module:
    """Averaging convs and identity BNs (eval mode): every pre-activation stays positive and
    small, so no ReLU/ReLU6 cuts a gradient path and the measured field is the geometric one."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.constant_(m.weight, 1.0 / m.weight[0].numel())
    return net.eval()


def measured_rf(net: nn.Module, in_channels: int, size: int, output=lambda y: y) -> int:
    x = (0.01 + 0.01 * torch.rand(1, in_channels, size, size)).requires_grad_()
    y = output(net(x))
    c_h, c_w = y.shape[-2] // 2, y.shape[-1] // 2
    y[0, :, c_h, c_w].sum().backward()
    rows = x.grad[0].abs().sum(dim=(0, 2)).nonzero().flatten()
    assert rows.min() > 0 and rows.max() < size - 1, "field clipped by the border: larger input"
    # The extent, holes included: a dilated kernel samples every D-th row of its K_eff span.
    return int(rows.max() - rows.min() + 1)


def k_eff(k: int, d: int) -> int:
    return d * (k - 1) + 1


@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("dilation", [1, 2, 4])
def test_single_dilated_depthwise_separable_conv(kernel_size, dilation):
    conv = _make_monotone(DepthwiseSeparableConv(4, 4, kernel_size, dilation=dilation))
    assert measured_rf(conv, 4, 32) == k_eff(kernel_size, dilation)


@pytest.mark.parametrize("dilation", [1, 2, 4])
def test_dilated_basic_block_stacks_two_effective_kernels(dilation):
    block = _make_monotone(basic_block(4, 4, dilation=dilation))
    # Two stacked convs: RF = K_eff + (K_eff - 1).
    assert measured_rf(block, 4, 40) == 2 * k_eff(3, dilation) - 1


def _undilated(net: nn.Module) -> nn.Module:
    """The same network with every conv's dilation reset to 1 (same resolution)."""
    net = copy.deepcopy(net)
    for m in net.modules():
        if isinstance(m, nn.Conv2d) and m.dilation != (1, 1):
            m.dilation = (1, 1)
            m.padding = tuple((k - 1) // 2 for k in m.kernel_size)
    return net


def _features_rf(net, size):
    return measured_rf(net, 3, size, output=lambda out: out.features[-1])


@pytest.mark.parametrize(
    ("family", "dilated_3x3_convs"), [("resnet_v1_basic", 2), ("mobilenet_v1", 1)]
)
def test_dilated_last_stage_grows_the_network_field_by_the_formula(family, dilated_3x3_convs):
    torch.manual_seed(0)
    dilated = _make_monotone(build(family, num_stages=3, dilate_last=1, downsample="avgpool"))
    plain = _undilated(dilated)
    assert dilated.strides == [1, 2, 4, 4]
    x = torch.randn(1, 3, 32, 32)
    assert dilated(x).features[-1].shape == plain(x).features[-1].shape == (1, 32, 8, 8)
    # Each 3x3 conv of the last stage (dilation 2, input jump = stride 4) widens the field by
    # (K_eff(3, 2) - K_eff(3, 1)) * 4 pixels.
    growth = dilated_3x3_convs * (k_eff(3, 2) - k_eff(3, 1)) * dilated.strides[-1]
    assert _features_rf(dilated, 128) - _features_rf(plain, 128) == growth


@pytest.mark.parametrize("family", ["inception", "mobilenet_v2", "resnet_v2_bottleneck"])
def test_dilated_backbone_sees_more_than_the_undilated_one(family):
    torch.manual_seed(0)
    dilated = _make_monotone(build(family, num_stages=3, dilate_last=2, downsample="stride"))
    plain = _undilated(dilated)
    assert dilated.strides == [1, 2, 2, 2]
    assert _features_rf(dilated, 96) > _features_rf(plain, 96)
