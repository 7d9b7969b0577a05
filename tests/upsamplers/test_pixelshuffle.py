import pytest
import torch
import torch.nn.functional as F

from upbench.upsamplers.pixelshuffle import PixelShuffleUpsample, icnr_


def pixel_shuffle_reference(t, r):
    """ESPCN's periodic shuffle written out: out[c, r*h + i, r*w + j] = t[c*r^2 + i*r + j, h, w]."""
    n, crr, h, w = t.shape
    c = crr // (r * r)
    out = torch.empty(n, c, r * h, r * w, dtype=t.dtype)
    for ch in range(c):
        for i in range(r):
            for j in range(r):
                out[:, ch, i::r, j::r] = t[:, ch * r * r + i * r + j]
    return out


@pytest.mark.parametrize("r", [2, 3])
def test_forward_is_conv_then_periodic_shuffle(r):
    torch.manual_seed(0)
    m = PixelShuffleUpsample(3, 2, r, icnr=False)
    x = torch.randn(1, 3, 4, 5)
    t = F.conv2d(x, m.conv.weight, m.conv.bias, padding=1)
    torch.testing.assert_close(m(x), pixel_shuffle_reference(t, r))


@pytest.mark.parametrize("r", [2, 3, 4])
def test_icnr_output_is_nearest_upsampled_conv(r):
    torch.manual_seed(0)
    m = PixelShuffleUpsample(3, 2, r, icnr=True)
    x = torch.randn(2, 3, 5, 4)
    # The r^2 filters of output channel c are c*r^2 ... c*r^2 + r^2 - 1, all equal to the first.
    sub_weight, sub_bias = m.conv.weight[:: r * r], m.conv.bias[:: r * r]
    expected = F.interpolate(F.conv2d(x, sub_weight, sub_bias, padding=1), scale_factor=r)
    y = m(x)
    torch.testing.assert_close(y, expected)
    blocks = y.unfold(2, r, r).unfold(3, r, r)  # (N, C, H, W, r, r)
    torch.testing.assert_close(blocks, blocks[..., :1, :1].expand_as(blocks))


@pytest.mark.parametrize("r", [2, 3, 4])
def test_without_icnr_blocks_are_not_constant(r):
    torch.manual_seed(0)
    y = PixelShuffleUpsample(3, 2, r, icnr=False)(torch.randn(2, 3, 5, 4))
    blocks = y.unfold(2, r, r).unfold(3, r, r)
    spread = (blocks - blocks[..., :1, :1]).abs().amax(dim=(-2, -1))
    assert (spread > 1e-3).float().mean() > 0.9


def test_icnr_keeps_default_init_scale():
    """ICNR only ties filters: the weight bound stays PyTorch's 1/sqrt(fan_in)."""
    torch.manual_seed(0)
    m = PixelShuffleUpsample(16, 8, 2, icnr=True)
    bound = 1 / (16 * 9) ** 0.5
    assert m.conv.weight.abs().max() <= bound
    assert m.conv.weight.abs().max() > 0.9 * bound
    assert m.conv.bias.abs().max() <= bound


def test_icnr_rejects_incompatible_conv():
    with pytest.raises(ValueError, match="divisible by scale"):
        icnr_(torch.nn.Conv2d(3, 6, 3), scale=2)


@pytest.mark.parametrize("cin,cout,r", [(3, 5, 2), (8, 2, 3), (4, 4, 4)])
def test_parameter_count(cin, cout, r):
    m = PixelShuffleUpsample(cin, cout, r)
    assert sum(p.numel() for p in m.parameters()) == 9 * cin * cout * r * r + cout * r * r
