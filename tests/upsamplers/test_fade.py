"""FADE against a per-pixel loop of the paper's equations, the official module's parameters, and
its refusals."""

import math

import pytest
import torch

from upbench.upsamplers.fade import FADE


def _sigmoid(v):
    return 1 / (1 + math.exp(-v))


def fade_loop(m: FADE, x, guide):
    """FADE written pixel by pixel (float64): semi-shift logits from the 3x3 windows of the
    compressed encoder feature at p and of the compressed decoder feature at p // 2 (zero padded,
    the shared conv's bias in both), softmax over the taps, CARAFE reassembly of the 5x5 window
    of x around p // 2 (zero outside), gate sigmoid(g . x[p // 2] + b)."""
    n, c, h, w = x.shape
    k = m.k_up
    r = k // 2
    we, be = m.compressor_en.weight[:, :, 0, 0], m.compressor_en.bias
    wd = m.compressor_de.weight[:, :, 0, 0]
    conv_w, conv_b = m.content_encoder.weight, m.content_encoder.bias
    groups = m.content_encoder.groups
    enc = torch.einsum("oc,nchw->nohw", we, guide) + be.view(1, -1, 1, 1)
    dec = torch.einsum("oc,nchw->nohw", wd, x)
    out = torch.zeros(n, c, 2 * h, 2 * w, dtype=x.dtype)
    taps = k * k
    per_group_in = enc.shape[1] // groups
    for b in range(n):
        for i in range(2 * h):
            for j in range(2 * w):
                logits = []
                for t in range(taps):
                    g = t // (taps // groups)
                    channels = range(g * per_group_in, (g + 1) * per_group_in)
                    total = 2 * conv_b[t]
                    for u in range(3):
                        for v in range(3):
                            ei, ej = i + u - 1, j + v - 1
                            di, dj = i // 2 + u - 1, j // 2 + v - 1
                            for ci, cc in enumerate(channels):
                                wt = conv_w[t, ci, u, v]
                                if 0 <= ei < 2 * h and 0 <= ej < 2 * w:
                                    total = total + wt * enc[b, cc, ei, ej]
                                if 0 <= di < h and 0 <= dj < w:
                                    total = total + wt * dec[b, cc, di, dj]
                    logits.append(total)
                logits = torch.stack(logits)
                kernel = torch.exp(logits - logits.max())
                kernel = kernel / kernel.sum()
                gate = _sigmoid(
                    float(m.gate.weight[0, :, 0, 0] @ x[b, :, i // 2, j // 2] + m.gate.bias[0])
                )
                for ch in range(c):
                    acc = 0.0
                    for dy in range(k):
                        for dx in range(k):
                            si, sj = i // 2 + dy - r, j // 2 + dx - r
                            if 0 <= si < h and 0 <= sj < w:
                                acc = acc + kernel[dy * k + dx] * x[b, ch, si, sj]
                    out[b, ch, i, j] = gate * guide[b, ch, i, j] + (1 - gate) * acc
    return out


@pytest.mark.parametrize("lite", [False, True])
def test_matches_the_loop_reference(lite):
    torch.manual_seed(0)
    m = FADE(3, 3, 2, guide_channels=3, embedding_dim=4, kernel_up=3 if lite else 5, lite=lite)
    m = m.double()
    with torch.no_grad():  # random biases, so the double-counted conv bias is exercised
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    x = torch.randn(2, 3, 3, 4, dtype=torch.float64)
    guide = torch.randn(2, 3, 6, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(m(x, guide), fade_loop(m, x, guide), atol=1e-10, rtol=0)


# The parameters of the official FADE / FADELite (poppinace/fade, FADE_L2H.py) with
# in_channels_en = in_channels_de = C, scale 2, up_kernel_size 5, in their order.
def official_shapes(c, lite):
    m, k2 = (25, 25) if lite else (64, 25)
    return [
        ("gate_generator.conv.weight", (1, c, 1, 1)),
        ("gate_generator.conv.bias", (1,)),
        ("ker_generator.compressor_en.weight", (m, c, 1, 1)),
        ("ker_generator.compressor_en.bias", (m,)),
        ("ker_generator.compressor_de.weight", (m, c, 1, 1)),
        ("ker_generator.content_encoder.weight", (k2, 1 if lite else m, 3, 3)),
        ("ker_generator.content_encoder.bias", (k2,)),
    ]


@pytest.mark.parametrize("lite", [False, True])
def test_one_parameter_per_official_parameter_with_its_shape(lite):
    ours = [
        (name, tuple(p.shape)) for name, p in FADE(256, 256, 2, 256, lite=lite).named_parameters()
    ]
    assert [shape for _, shape in ours] == [shape for _, shape in official_shapes(256, lite)]
    count = sum(math.prod(shape) for _, shape in official_shapes(256, lite))
    assert sum(p.numel() for p in FADE(256, 256, 2, 256, lite=lite).parameters()) == count
    if not lite:
        assert count == 47_514  # (C+1) + (C*64+64) + C*64 + (9*64*25+25)


def test_init_as_the_official_code():
    torch.manual_seed(0)
    m = FADE(64, 64, 2, 64)
    for conv in (m.gate, m.compressor_en, m.compressor_de, m.content_encoder):
        fan_in = conv.weight[0].numel()
        fan_out = conv.weight.shape[0] * conv.weight[0, 0].numel()
        bound = math.sqrt(6 / (fan_in + fan_out))  # Xavier-uniform
        assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.9 * bound
        assert conv.bias is None or not conv.bias.any()


def test_projections_only_where_the_channels_differ():
    m = FADE(32, 16, 2, guide_channels=16)
    assert isinstance(m.guide_proj, torch.nn.Identity) and m.proj.weight.shape == (16, 32, 1, 1)
    y = m(torch.randn(1, 32, 3, 5), torch.randn(1, 16, 6, 10))
    assert y.shape == (1, 16, 6, 10)


def test_refusals_say_what_to_do():
    with pytest.raises(ValueError, match=r"only supports scale=2.*decoder=segformer"):
        FADE(8, 8, 4, 8)
    with pytest.raises(ValueError, match=r"twice the size"):
        FADE(8, 8, 2, 8)(torch.randn(1, 8, 3, 3), torch.randn(1, 8, 5, 6))
