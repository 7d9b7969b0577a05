"""Built-in backbones honour upbench.backbones.base: reported channels/strides match forward for
every family x downsampling mode x num_stages, pooling indices exist exactly for max-pooled stages
and unpool back onto the maxima of the previous feature."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.backbones.builtin_cases import FAMILIES, build


def expected_strides(num_stages: int, dilate_last: int) -> list[int]:
    # Stage i halves the resolution unless it is one of the last `dilate_last` stages.
    return [1] + [2 ** min(i, num_stages - dilate_last) for i in range(1, num_stages + 1)]


@pytest.mark.parametrize("dilate_last", [0, 1])
@pytest.mark.parametrize("num_stages", [3, 4, 5])
@pytest.mark.parametrize("downsample", ["maxpool", "stride", "avgpool"])
@pytest.mark.parametrize("family", FAMILIES)
def test_reported_channels_and_strides_match_forward(family, downsample, num_stages, dilate_last):
    torch.manual_seed(0)
    net = build(family, num_stages=num_stages, downsample=downsample, dilate_last=dilate_last)
    size = 2**num_stages
    features, indices = net(torch.randn(2, 3, size, 2 * size))
    assert net.strides == expected_strides(num_stages, dilate_last)
    assert net.out_channels == [4 * 2**i for i in range(num_stages + 1)]
    assert len(features) == len(indices) == num_stages + 1
    for feature, channels, stride in zip(features, net.out_channels, net.strides, strict=True):
        assert feature.shape == (2, channels, size // stride, 2 * size // stride)
    assert net.provides_pool_indices == (downsample == "maxpool")
    pooled_stages = {
        i
        for i in range(1, num_stages + 1)
        if downsample == "maxpool" and net.strides[i] != net.strides[i - 1]
    }
    assert {i for i, idx in enumerate(indices) if idx is not None} == pooled_stages
    for i in pooled_stages:
        prev = features[i - 1]
        assert indices[i].shape == (
            2,
            net.out_channels[i - 1],
            prev.shape[2] // 2,
            prev.shape[3] // 2,
        )
        assert indices[i].dtype == torch.int64


@pytest.mark.parametrize("family", FAMILIES)
def test_pool_indices_unpool_onto_the_maxima_of_the_previous_feature(family):
    torch.manual_seed(0)
    net = build(family, num_stages=3, downsample="maxpool")
    features, indices = net(torch.randn(2, 3, 16, 24))
    for i in range(1, 4):
        prev, idx = features[i - 1], indices[i]
        n, c, h, w = prev.shape
        windows = prev.reshape(n, c, h // 2, 2, w // 2, 2)
        pooled = windows.amax(dim=(3, 5))
        unpooled = nn.MaxUnpool2d(2, 2)(pooled, idx, output_size=(h, w))
        written = torch.zeros(n, c, h * w).scatter_(2, idx.flatten(2), 1.0).reshape(n, c, h, w)
        per_window = written.reshape(n, c, h // 2, 2, w // 2, 2).sum(dim=(3, 5))
        # Exactly one position per 2x2 window, holding that window's maximum.
        assert torch.equal(per_window, torch.ones_like(pooled))
        assert torch.equal(unpooled, prev * written)
        assert torch.equal((unpooled * written).reshape_as(windows).sum(dim=(3, 5)), pooled)


@pytest.mark.parametrize("in_channels", [1, 5])
@pytest.mark.parametrize("family", FAMILIES)
def test_in_channels(family, in_channels):
    net = build(family, in_channels=in_channels, num_stages=3)
    features, _ = net(torch.randn(1, in_channels, 16, 16))
    assert [f.shape[1] for f in features] == net.out_channels
    with pytest.raises(RuntimeError):
        net(torch.randn(1, in_channels + 1, 16, 16))


def test_depth_per_stage_builds_that_many_blocks():
    net = build("mobilenet_v1", num_stages=3, depth=[1, 2, 3])
    assert [len(stage.blocks) for stage in net.stages] == [1, 2, 3]
    features, _ = net(torch.randn(1, 3, 16, 16))
    assert features[-1].shape == (1, 32, 2, 2)


def test_dilated_stages_use_growing_dilation_and_keep_resolution():
    net = build("mobilenet_v1", num_stages=4, dilate_last=2, downsample="stride")
    dilations = [
        {
            m.dilation[0]
            for m in stage.modules()
            if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1
        }
        for stage in net.stages
    ]
    assert dilations == [{1}, {1}, {2}, {4}]
    features, _ = net(torch.randn(1, 3, 16, 16))
    assert [f.shape[-1] for f in features] == [16, 8, 4, 4, 4]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"downsample": "bilinear"}, "downsample must be one of"),
        ({"num_stages": 3, "dilate_last": 3}, "at least one stage downsamples"),
        ({"dilate_last": -1}, "dilate_last"),
        ({"num_stages": 3, "depth": [1, 1]}, "one entry per stage"),
        ({"depth": 0}, "depth must be a positive integer"),
        ({"width": 0}, "width must be a positive integer"),
        ({"in_channels": 0}, "in_channels must be a positive integer"),
    ],
)
@pytest.mark.parametrize("family", FAMILIES)
def test_bad_configuration_is_refused(family, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build(family, **kwargs)


def test_family_specific_options_are_checked():
    with pytest.raises(ValueError, match="block must be one of"):
        build("resnet_v1_basic", block="wide")
    with pytest.raises(ValueError, match="version must be 1 or 2"):
        build("mobilenet_v1", version=3)
    with pytest.raises(ValueError, match="at least 8 output channels"):
        build("inception", width=1)
