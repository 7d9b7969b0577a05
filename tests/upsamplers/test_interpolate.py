import pytest
import torch
import torch.nn.functional as F

from upbench.upsamplers.interpolate import Interpolation


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "bicubic", "area"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_equals_interpolate_then_1x1_conv(mode, scale):
    torch.manual_seed(0)
    m = Interpolation(3, 5, scale, mode=mode)
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    m = m.double()
    align = False if mode in ("bilinear", "bicubic") else None
    up = F.interpolate(x, scale_factor=scale, mode=mode, align_corners=align)
    ref = torch.einsum("oi,nihw->nohw", m.proj.weight[:, :, 0, 0], up)
    ref = ref + m.proj.bias[None, :, None, None]
    torch.testing.assert_close(m(x), ref)


def test_nearest_copies_each_pixel_to_a_block():
    x = torch.arange(6.0).reshape(1, 1, 2, 3)
    y = Interpolation(1, 1, 2, mode="nearest")(x)
    expected = torch.tensor(
        [[0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2], [3, 3, 4, 4, 5, 5], [3, 3, 4, 4, 5, 5]]
    ).float()
    torch.testing.assert_close(y[0, 0], expected)


def test_bilinear_half_pixel_centres():
    # align_corners=False: output pixel 1 of a x2 resize sits at input coordinate 0.25.
    y = Interpolation(1, 1, 2, mode="bilinear")(torch.tensor([[[[0.0, 4.0]]]]))
    torch.testing.assert_close(y[0, 0, 0], torch.tensor([0.0, 1.0, 3.0, 4.0]))


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("cin,cout", [(4, 4), (3, 7), (8, 2)])
def test_parameter_count(mode, cin, cout):
    expected = 0 if cin == cout else cin * cout + cout
    assert n_params(Interpolation(cin, cout, 2, mode=mode)) == expected


def test_bad_mode():
    with pytest.raises(ValueError, match="mode must be one of"):
        Interpolation(3, 3, 2, mode="linear")
