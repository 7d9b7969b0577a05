import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from upbench.upsamplers.dysample import DySample


def bilinear_border(img, y, x):
    """Bilinear value of img (H, W) at pixel coordinates (y, x) (centres at integers), the
    point clamped into [0, H-1] x [0, W-1] (grid_sample's padding_mode="border")."""
    h, w = img.shape
    y, x = min(max(y, 0.0), h - 1.0), min(max(x, 0.0), w - 1.0)
    y0, x0 = math.floor(y), math.floor(x)
    y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
    fy, fx = y - y0, x - x0
    top = (1 - fx) * img[y0, x0] + fx * img[y0, x1]
    bottom = (1 - fx) * img[y1, x0] + fx * img[y1, x1]
    return (1 - fy) * top + fy * bottom


def dysample_loops(x, offsets, s, groups):
    """DySample (Liu et al. 2023) output pixel by pixel. ``offsets`` (N, 2*G*s^2, H, W) are the
    scoped predictions in input pixels, channels (x/y, group, i, j); sub-pixel (i, j) of source
    pixel (h, w) samples at (h + (i + 0.5)/s - 0.5 + oy, w + (j + 0.5)/s - 0.5 + ox) (the
    bilinear position plus the offset), each channel with its group's point."""
    n, c, hin, win = x.shape
    per = groups * s * s
    out = torch.zeros(n, c, s * hin, s * win, dtype=x.dtype)
    for b, ch, yy, xx in itertools.product(range(n), range(c), range(s * hin), range(s * win)):
        g, (h, i), (w, j) = ch // (c // groups), divmod(yy, s), divmod(xx, s)
        k = g * s * s + i * s + j
        py = h + (i + 0.5) / s - 0.5 + offsets[b, per + k, h, w].item()
        px = w + (j + 0.5) / s - 0.5 + offsets[b, k, h, w].item()
        out[b, ch, yy, xx] = bilinear_border(x[b, ch], py, px)
    return out


def offset_conv_output(m, x):
    """The module's raw offsets O * scope, from its weights, with the conv written as einsum."""
    source = F.pixel_shuffle(x, m.scale) if m.style == "pl" else x

    def conv1x1(conv):
        out = torch.einsum("oc,nchw->nohw", conv.weight[:, :, 0, 0], source)
        return out if conv.bias is None else out + conv.bias.view(1, -1, 1, 1)

    scoped = (
        conv1x1(m.offset) * 0.25
        if m.scope is None
        else conv1x1(m.offset) * 0.5 * torch.sigmoid(conv1x1(m.scope))
    )
    return F.pixel_unshuffle(scoped, m.scale) if m.style == "pl" else scoped


@pytest.mark.parametrize(
    ("style", "s", "dyscope"),
    [("lp", 2, False), ("lp", 3, True), ("pl", 2, False), ("pl", 2, True)],
)
def test_matches_per_pixel_sampling(style, s, dyscope):
    torch.manual_seed(0)
    m = DySample(8, 8, s, style=style, groups=2, dyscope=dyscope).double()
    with torch.no_grad():
        # Offsets of a few pixels, so points land across pixels and outside the map.
        nn.init.normal_(m.offset.weight, std=1.5)
        nn.init.normal_(m.offset.bias, std=1.0)
        if m.scope is not None:
            nn.init.normal_(m.scope.weight, std=1.0)
    x = torch.randn(1, 8, 3, 4, dtype=torch.float64)
    with torch.no_grad():
        expected = dysample_loops(x, offset_conv_output(m, x), s, 2)
        torch.testing.assert_close(m(x), expected)


@pytest.mark.parametrize("style", ["lp", "pl"])
@pytest.mark.parametrize("s", [2, 4])
@pytest.mark.parametrize("dyscope", [False, True])
@pytest.mark.parametrize("size", [(5, 3), (4, 6)])
def test_zero_offsets_equal_bilinear_interpolation(style, s, dyscope, size):
    m = DySample(32, 32, s, style=style, groups=4, dyscope=dyscope)
    with torch.no_grad():
        m.offset.weight.zero_()
        m.offset.bias.zero_()
    x = torch.randn(2, 32, *size)
    expected = F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
    torch.testing.assert_close(m(x), expected)


@pytest.mark.parametrize(
    ("s", "values"), [(2, [-0.25, 0.25]), (3, [-1 / 3, 0.0, 1 / 3]), (1, [0.0])]
)
def test_init_pos_is_the_bilinear_grid(s, values):
    m = DySample(4, 4, s, groups=2)
    pos = m.init_pos.view(2, 2, s, s)  # (x/y, group, i, j)
    h = torch.tensor(values)
    for g in range(2):
        torch.testing.assert_close(pos[0, g], h.view(1, s).expand(s, s))  # x varies with j
        torch.testing.assert_close(pos[1, g], h.view(s, 1).expand(s, s))  # y varies with i


def test_official_init():
    torch.manual_seed(0)
    m = DySample(64, 64, 2, dyscope=True)
    assert m.offset.weight.std().item() == pytest.approx(0.001, rel=0.05)
    assert not m.offset.bias.any() and not m.scope.weight.any()
    assert m.scope.bias is None


def dysample_params(cin, cout, s, style, groups, dyscope):
    conv_in = cin // (s * s) if style == "pl" else cin
    conv_out = 2 * groups if style == "pl" else 2 * groups * s * s
    offset = conv_in * conv_out + conv_out
    scope = conv_in * conv_out if dyscope else 0
    proj = 0 if cin == cout else cin * cout + cout
    return offset + scope + proj


@pytest.mark.parametrize(
    ("cin", "cout", "s", "style", "groups", "dyscope"),
    [
        (64, 64, 2, "lp", 4, False),
        (64, 64, 2, "lp", 4, True),
        (64, 32, 4, "pl", 4, False),
        (48, 48, 2, "pl", 2, True),
        (12, 7, 3, "lp", 3, False),
    ],
)
def test_parameter_count_formula(cin, cout, s, style, groups, dyscope):
    m = DySample(cin, cout, s, style=style, groups=groups, dyscope=dyscope)
    assert sum(p.numel() for p in m.parameters()) == dysample_params(
        cin, cout, s, style, groups, dyscope
    )


def test_paper_default_parameter_count():
    # lp, G = 4, s = 2 on 256 channels: a 256 -> 32 1x1 conv.
    assert sum(p.numel() for p in DySample(256, 256, 2).parameters()) == 256 * 32 + 32


@pytest.mark.parametrize("style", ["lp", "pl"])
@pytest.mark.parametrize("s", [1, 2, 4])
@pytest.mark.parametrize(("cin", "cout"), [(16, 16), (16, 5)])
@pytest.mark.parametrize("size", [(5, 3), (4, 6)])
def test_output_shape(style, s, cin, cout, size):
    y = DySample(cin, cout, s, style=style)(torch.randn(2, cin, *size))
    assert y.shape == (2, cout, s * size[0], s * size[1])


def test_projection_only_when_channels_change():
    assert isinstance(DySample(8, 8, 2).proj, nn.Identity)
    m = DySample(8, 3, 2)
    same = DySample(8, 8, 2)
    same.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("proj")})
    x = torch.randn(1, 8, 3, 4)
    torch.testing.assert_close(m(x), m.proj(same(x)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"in_channels": 6}, "groups=4 must be a positive divisor of in_channels=6"),
        ({"groups": 0}, "groups=0 must be a positive divisor"),
        ({"in_channels": 12, "style": "pl", "scale": 4}, "divisible by scale\\*\\*2=16"),
        ({"style": "linear"}, "style must be one of"),
        ({"scale": 2.0}, "scale must be a positive int"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DySample(**{"in_channels": 8, "out_channels": 8, "scale": 2, **kwargs})


def test_bf16_input_samples_where_float32_does_on_a_wide_map():
    """bf16 has no half-integer above 128: a grid built in the input's dtype puts the points of
    a 600-px-wide map up to ~2 px off. Built in float32, a bf16 run under autocast samples the
    same points as a float32 run (what is left is bf16 rounding of the values)."""
    torch.manual_seed(0)
    m = DySample(4, 4, 2, groups=1)
    x = torch.randn(1, 4, 3, 600).bfloat16()
    reference = m(x.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    error = (y.float() - reference).abs()
    assert error.max() < 0.05, error.max()
