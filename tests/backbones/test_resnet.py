"""ResNet blocks (He et al. 2016 v1, 2016b v2): identity path, projection shortcuts, parameter
counts of the bottleneck."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from upbench.backbones.resnet import ResidualBlock, ResNet, basic_block, bottleneck_block

BLOCKS = {"basic": basic_block, "bottleneck": bottleneck_block}


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("preact", [False, True])
def test_zeroed_last_norm_leaves_the_identity_path(block, preact):
    torch.manual_seed(0)
    net = BLOCKS[block](16, 16, preact=preact)
    assert net.shortcut is None
    nn.init.zeros_(net.last_norm().weight)
    x = torch.randn(2, 16, 8, 8)
    # v1 applies ReLU after the sum y = F(x) + x; v2 adds nothing after it.
    expected = x if preact else torch.relu(x)
    torch.testing.assert_close(net(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("preact", [False, True])
@pytest.mark.parametrize(
    ("in_ch", "out_ch", "stride"), [(8, 8, 1), (8, 16, 1), (8, 8, 2), (8, 16, 2)]
)
def test_projection_shortcut_exactly_when_the_shape_changes(block, preact, in_ch, out_ch, stride):
    net = BLOCKS[block](in_ch, out_ch, stride=stride, preact=preact)
    x = torch.randn(2, in_ch, 8, 8)
    y = net(x)
    assert y.shape == (2, out_ch, 8 // stride, 8 // stride)
    if y.shape == x.shape:
        assert net.shortcut is None
    else:
        convs = [m for m in net.shortcut.modules() if isinstance(m, nn.Conv2d)]
        assert [(c.kernel_size, c.stride) for c in convs] == [((1, 1), (stride, stride))]


@pytest.mark.parametrize("downsample", ["maxpool", "stride", "avgpool"])
def test_shortcuts_inside_a_backbone_follow_the_block_shapes(downsample):
    net = ResNet(width=4, depth=2, num_stages=3, downsample=downsample, dilate_last=1)
    shapes = {}
    hooks = [
        m.register_forward_hook(
            lambda mod, inp, out: shapes.__setitem__(mod, (inp[0].shape, out.shape))
        )
        for m in net.modules()
        if isinstance(m, ResidualBlock)
    ]
    net(torch.randn(1, 3, 16, 16))
    for h in hooks:
        h.remove()
    assert len(shapes) == 6
    for block, (x_shape, y_shape) in shapes.items():
        assert (block.shortcut is not None) == (x_shape != y_shape)


def _bn(c: int) -> int:
    return 2 * c  # affine weight and bias


@pytest.mark.parametrize("preact", [False, True])
@pytest.mark.parametrize(("in_ch", "out_ch", "stride"), [(32, 32, 1), (16, 32, 2)])
def test_bottleneck_parameter_count(preact, in_ch, out_ch, stride):
    mid = out_ch // 4
    # 1x1 reduce, 3x3, 1x1 expand (no biases), plus a 1x1 projection when the shape changes.
    convs = in_ch * mid + 9 * mid * mid + mid * out_ch
    projection = in_ch * out_ch if (in_ch, stride) != (out_ch, 1) else 0
    if preact:  # BN before each conv; the projection reads the pre-activated input, no BN.
        norms = _bn(in_ch) + _bn(mid) + _bn(mid)
    else:  # BN after each conv, and after the projection.
        norms = _bn(mid) + _bn(mid) + _bn(out_ch) + (_bn(out_ch) if projection else 0)
    net = bottleneck_block(in_ch, out_ch, stride=stride, preact=preact)
    assert sum(p.numel() for p in net.parameters()) == convs + projection + norms


def test_bottleneck_needs_channels_divisible_by_expansion():
    with pytest.raises(ValueError, match="divisible by 4"):
        bottleneck_block(8, 6)


def test_preact_network_ends_with_bn_relu():
    net = ResNet(width=4, num_stages=3, preact=True)
    assert isinstance(net.stages[-1].blocks[-1][0], nn.BatchNorm2d)
    features, _ = net(torch.randn(2, 3, 16, 16))
    assert features[-1].min() >= 0
    assert features[-2].min() < 0  # inner stages expose the raw residual stream
