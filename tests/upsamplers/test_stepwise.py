import functools

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from upbench.upsamplers.maxunpool import MaxUnpool
from upbench.upsamplers.resize_conv import ResizeConv
from upbench.upsamplers.stepwise import Stepwise


def test_forward_is_repeated_bilinear_conv_bn_relu():
    """Reference: per step, 1x1 projection (first step only), bilinear x2, conv3x3, BN, ReLU."""
    torch.manual_seed(0)
    m = Stepwise(3, 4, 4)
    x = torch.randn(2, 3, 5, 6)
    ref = x
    for i, step in enumerate(m.steps):
        up, conv, bn, _ = step
        if i == 0:
            ref = F.conv2d(ref, up.proj.weight, up.proj.bias)
        ref = F.interpolate(ref, scale_factor=2, mode="bilinear", align_corners=False)
        ref = F.conv2d(ref, conv.weight, padding=1)
        ref = F.batch_norm(ref, None, None, bn.weight, bn.bias, training=True)
        ref = F.relu(ref)
    torch.testing.assert_close(m(x), ref)


@pytest.mark.parametrize("scale,steps", [(2, 1), (4, 2), (8, 3)])
def test_channels_in_to_out_then_out_to_out(scale, steps):
    calls = []

    def factory(in_channels, out_channels, scale):
        calls.append((in_channels, out_channels, scale))
        return ResizeConv(in_channels, out_channels, scale, mode="nearest")

    m = Stepwise(3, 5, scale, inner=factory)
    assert calls == [(3, 5, 2)] + [(5, 5, 2)] * (steps - 1)
    assert m(torch.randn(1, 3, 3, 4)).shape == (1, 5, 3 * scale, 4 * scale)


@pytest.mark.parametrize("scale", [2, 4, 8])
@pytest.mark.parametrize("cin,cout", [(4, 4), (3, 6)])
def test_parameter_count_default_inner(scale, cin, cout):
    refine = 9 * cout * cout + 2 * cout  # conv without bias + BN affine
    projection = 0 if cin == cout else cin * cout + cout
    expected = projection + refine * (scale.bit_length() - 1)
    assert sum(p.numel() for p in Stepwise(cin, cout, scale).parameters()) == expected


def test_mapping_inner_is_instantiated_per_step():
    inner = {"_target_": "upbench.upsamplers.resize_conv.ResizeConv", "mode": "nearest"}
    m = Stepwise(3, 4, 4, inner=inner)
    ups = [step[0] for step in m.steps]
    assert [type(u) for u in ups] == [ResizeConv, ResizeConv]
    assert ups[0] is not ups[1] and ups[0].mode == "nearest"
    assert (ups[0].conv.in_channels, ups[1].conv.in_channels) == (3, 4)


def test_yaml_inner_stays_a_config_until_stepwise_builds_it():
    cfg = OmegaConf.create(
        {
            "_target_": "upbench.upsamplers.stepwise.Stepwise",
            "_recursive_": False,
            "inner": {"_target_": "upbench.upsamplers.pixelshuffle.PixelShuffleUpsample"},
        }
    )
    m = instantiate(cfg, in_channels=3, out_channels=4, scale=8)
    assert len(m.steps) == 3
    assert m(torch.randn(1, 3, 2, 3)).shape == (1, 4, 16, 24)


def test_partial_class_as_factory():
    m = Stepwise(2, 2, 2, inner=functools.partial(ResizeConv, mode="bicubic"))
    assert m.steps[0][0].mode == "bicubic"


@pytest.mark.parametrize("scale", [0, 1, 3, 6, 2.0])
def test_scale_must_be_power_of_two(scale):
    with pytest.raises(ValueError, match="power of two >= 2"):
        Stepwise(3, 3, scale)


@pytest.mark.parametrize(
    "inner,error,match",
    [
        ({"mode": "nearest"}, ValueError, "must be a config with a _target_"),
        (42, TypeError, "inner must be None, a mapping"),
        (MaxUnpool, ValueError, "needs encoder pool indices"),
    ],
)
def test_bad_inner(inner, error, match):
    with pytest.raises(error, match=match):
        Stepwise(3, 3, 4, inner=inner)
