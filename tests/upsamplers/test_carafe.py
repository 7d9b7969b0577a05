import pytest
import torch
from torch import nn

from upbench.upsamplers.carafe import CARAFE


def carafe_params(cin, cout, s, cm, k_enc, k_up, groups):
    """Parameter count from the paper's architecture: compressor, encoder, projection if any."""
    compressor = cin * cm + cm
    encoder = (cm * k_enc * k_enc + 1) * groups * s * s * k_up * k_up
    proj = 0 if cin == cout else cin * cout + cout
    return compressor + encoder + proj


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_paper_configuration_has_74148_parameters():
    assert count(CARAFE(256, 256, 2)) == 257 * 64 + 577 * 100 == 74_148


@pytest.mark.parametrize(
    ("cin", "cout", "s", "cm", "k_enc", "k_up", "groups"),
    [(16, 16, 4, 8, 3, 3, 2), (8, 12, 2, 4, 1, 5, 1), (6, 6, 3, 5, 5, 3, 3)],
)
def test_parameter_count_formula(cin, cout, s, cm, k_enc, k_up, groups):
    m = CARAFE(cin, cout, s, cm, k_enc, k_up, groups)
    assert count(m) == carafe_params(cin, cout, s, cm, k_enc, k_up, groups)


@pytest.mark.parametrize("s", [2, 4])
def test_kernels_start_near_uniform(s):
    torch.manual_seed(0)
    m = CARAFE(32, 32, s, group_size=2)
    kernels = m.kernels(torch.randn(2, 32, 5, 7))
    assert kernels.shape == (2, 2 * 25, 5 * s, 7 * s)
    per_group = kernels.view(2, 2, 25, 5 * s, 7 * s)
    torch.testing.assert_close(per_group.sum(2), torch.ones(2, 2, 5 * s, 7 * s))
    # Logits ~ N(0, 0.02^2) (encoder std 0.001 * sqrt(fan_in 576) * compressed std ~0.8), so
    # softmax gives every tap 1/25 to within a few per cent (PyTorch default init: ~170 % max).
    deviation = (kernels * 25 - 1).abs()
    assert deviation.max() < 0.15 and deviation.mean() < 0.03


def test_official_init():
    torch.manual_seed(0)
    m = CARAFE(256, 256, 2)
    assert m.content_encoder.weight.std().item() == pytest.approx(0.001, rel=0.05)
    bound = (6 / (256 + 64)) ** 0.5  # Xavier-uniform, fan_in 256, fan_out 64
    assert m.channel_compressor.weight.abs().max() <= bound
    assert m.channel_compressor.weight.abs().max() > 0.95 * bound
    assert not m.channel_compressor.bias.any() and not m.content_encoder.bias.any()


def shift_with_zeros(x, dy, dx):
    """out[..., y, x] = x[..., y + dy, x + dx], 0 outside."""
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    out[..., max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)] = x[
        ..., max(0, dy) : h - max(0, -dy), max(0, dx) : w - max(0, -dx)
    ]
    return out


def test_kernel_channels_follow_pixel_shuffle_and_tap_order():
    """Encoder channel (g*k^2 + t)*s^2 + a*s + b is tap t of group g at sub-pixel (a, b).

    With a zero encoder weight and a large bias on one tap per (group, phase), every output
    pixel copies one neighbour of its source pixel; sub-pixel (a, b) of group 0 reads the
    neighbour at offset (a - 1, b - 1) (tap (a, b) of the 3x3 window), group 1 the centre.
    """
    k, s = 3, 2
    m = CARAFE(4, 4, s, compressed_channels=2, kernel_up=k, group_size=2)
    with torch.no_grad():
        m.content_encoder.weight.zero_()
        m.content_encoder.bias.zero_()
        for a in range(s):
            for b in range(s):
                m.content_encoder.bias[(0 * k * k + a * k + b) * s * s + a * s + b] = 60.0
                m.content_encoder.bias[(1 * k * k + 4) * s * s + a * s + b] = 60.0
    x = torch.randn(1, 4, 4, 5)
    y = m(x)
    for a in range(s):
        for b in range(s):
            torch.testing.assert_close(
                y[:, :2, a::s, b::s], shift_with_zeros(x[:, :2], a - 1, b - 1)
            )
            torch.testing.assert_close(y[:, 2:, a::s, b::s], x[:, 2:])


@pytest.mark.parametrize("s", [1, 2, 4])
@pytest.mark.parametrize(("cin", "cout"), [(8, 8), (8, 3)])
@pytest.mark.parametrize("size", [(5, 3), (4, 6)])
def test_output_shape(s, cin, cout, size):
    y = CARAFE(cin, cout, s, compressed_channels=4, group_size=2)(torch.randn(2, cin, *size))
    assert y.shape == (2, cout, s * size[0], s * size[1])


def test_projection_only_when_channels_change():
    assert isinstance(CARAFE(8, 8, 2).proj, nn.Identity)
    m = CARAFE(8, 3, 2, compressed_channels=4)
    x = torch.randn(1, 8, 3, 4)
    same = CARAFE(8, 8, 2, compressed_channels=4)
    same.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("proj")})
    torch.testing.assert_close(m(x), m.proj(same(x)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"group_size": 3}, "group_size=3 must divide in_channels=8"),
        ({"kernel_up": 4}, "odd"),
        ({"kernel_encoder": 2}, "odd"),
        ({"scale": 0}, "scale must be a positive int"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CARAFE(**{"in_channels": 8, "out_channels": 8, "scale": 2, **kwargs})
