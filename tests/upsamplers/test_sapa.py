"""SAPA against a per-pixel loop of the paper's formula (borders included), its memory, its
parameters and init."""

import pytest
import torch
import torch.nn.functional as F

from upbench.upsamplers.sapa import SAPA


def sapa_loop(m: SAPA, x, guide):
    """SAPA pixel by pixel (float64): GroupNorm, 1x1 query/key, for output pixel p the dot
    products with the keys of the k x k window around p // s (an outside tap has similarity 0
    and value 0, as the official CUDA kernels), softmax over the window, weighted sum of x."""
    n, c, h, w = x.shape
    s, k = m.scale, m.k_up
    r = k // 2
    q = F.conv2d(m.norm_guide(guide), m.query.weight, m.query.bias)
    key = F.conv2d(m.norm_x(x), m.key.weight, m.key.bias)
    out = torch.zeros(n, c, s * h, s * w, dtype=x.dtype)
    for b in range(n):
        for i in range(s * h):
            for j in range(s * w):
                sims, values = [], []
                for dy in range(k):
                    for dx in range(k):
                        si, sj = i // s + dy - r, j // s + dx - r
                        inside = 0 <= si < h and 0 <= sj < w
                        sims.append(q[b, :, i, j] @ key[b, :, si, sj] if inside else 0.0)
                        values.append(x[b, :, si, sj] if inside else torch.zeros(c, dtype=x.dtype))
                sims = torch.tensor([float(v) for v in sims], dtype=x.dtype)
                weights = torch.exp(sims - sims.max())
                weights = weights / weights.sum()
                out[b, :, i, j] = sum(wt * v for wt, v in zip(weights, values, strict=True))
    return out


@pytest.mark.parametrize("scale", [2, 3])
@pytest.mark.parametrize("exporting", [False, True])
def test_matches_the_loop_reference(scale, exporting, monkeypatch):
    """Eager, and the graph taken under export (the similarities as one product over unfolded
    key windows, the reassembly as CARAFE's export graph)."""
    if exporting:
        monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    torch.manual_seed(0)
    # A 3x4 map with a 5x5 window: every output pixel's window crosses a border.
    m = SAPA(4, 4, scale, guide_channels=6, embedding_dim=5, norm_groups=2).double()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p))
    x = torch.randn(2, 4, 3, 4, dtype=torch.float64)
    guide = torch.randn(2, 6, 3 * scale, 4 * scale, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(m(x, guide), sapa_loop(m, x, guide), atol=1e-10, rtol=0)


def test_init_and_parameters_as_the_official_sapa_b():
    torch.manual_seed(0)
    m = SAPA(256, 256, 2, guide_channels=256)
    assert m.norm_guide.num_groups == 32 and m.norm_x.num_groups == 32
    assert m.query.weight.shape == (32, 256, 1, 1) and m.key.weight.shape == (32, 256, 1, 1)
    assert abs(m.query.weight.std().item() - 0.02) < 0.002 and not m.query.bias.any()
    # GroupNorm y and x (weight + bias each), q and k with bias.
    assert sum(p.numel() for p in m.parameters()) == 2 * 512 + 2 * (256 * 32 + 32)
    assert SAPA(16, 16, 2, guide_channels=48).norm_x.num_groups == 16  # gcd(32, 16)


def _saved_bytes(fn):
    """Bytes of the distinct storages autograd keeps for backward while running fn()."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def test_nothing_of_window_size_is_kept_for_backward():
    """The naive version unfolds the keys to (N, m * k^2, H, W) and the values to
    (N, C * k^2, H, W); here only the inputs, Q, K and the (N, k^2, sH, sW) attention are kept."""
    n, c, h, w, s, k = 1, 64, 16, 16, 2, 5
    m = SAPA(c, c, s, guide_channels=c)
    x = torch.randn(n, c, h, w, requires_grad=True)
    guide = torch.randn(n, c, s * h, s * w, requires_grad=True)
    saved = _saved_bytes(lambda: m(x, guide).sum().backward())
    naive_unfold = 4 * n * c * k * k * s * s * h * w  # the values unfolded at output size
    assert saved < naive_unfold / 4, (saved, naive_unfold)


def test_guide_size_checked():
    with pytest.raises(ValueError, match=r"the guide must be at 2 x the size"):
        SAPA(8, 8, 2, 8)(torch.randn(1, 8, 3, 3), torch.randn(1, 8, 5, 6))
