import pytest
import torch
import torch.nn.functional as F

from upbench.upsamplers.resize_conv import ResizeConv


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "bicubic", "area"])
@pytest.mark.parametrize("scale", [2, 4, 8])
@pytest.mark.parametrize("size", [(5, 6), (4, 7)])
def test_output_shape(mode, scale, size):
    m = ResizeConv(3, 4, scale, mode=mode)
    y = m(torch.randn(2, 3, *size))
    assert y.shape == (2, 4, scale * size[0], scale * size[1])


def test_matches_interpolate_then_conv():
    torch.manual_seed(0)
    m = ResizeConv(3, 2, 2, mode="bilinear")
    x = torch.randn(1, 3, 5, 4)
    up = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    ref = F.conv2d(up, m.conv.weight, m.conv.bias, padding=1)
    torch.testing.assert_close(m(x), ref)


@pytest.mark.parametrize("cin,cout,k", [(3, 5, 3), (8, 2, 3), (4, 4, 5)])
def test_parameter_count(cin, cout, k):
    m = ResizeConv(cin, cout, 2, kernel_size=k)
    assert sum(p.numel() for p in m.parameters()) == k * k * cin * cout + cout


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"mode": "trilinear"}, "mode must be one of"),
        ({"kernel_size": 4}, "kernel_size must be odd"),
        ({"scale": 1.5}, "scale must be a positive int"),
        ({"scale": 0}, "scale must be a positive int"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"in_channels": 3, "out_channels": 3, "scale": 2} | kwargs
    with pytest.raises(ValueError, match=match):
        ResizeConv(**args)
