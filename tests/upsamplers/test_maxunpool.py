import pytest
import torch
import torch.nn.functional as F

from upbench.upsamplers.maxunpool import MaxUnpool


def unpool_reference(values, indices, size):
    """Loop over pooled positions: write each value at its flat index in an (H, W) zero map."""
    n, c, h, w = values.shape
    out = torch.zeros(n, c, size[0] * size[1], dtype=values.dtype)
    for b in range(n):
        for ch in range(c):
            for i in range(h):
                for j in range(w):
                    out[b, ch, indices[b, ch, i, j]] = values[b, ch, i, j]
    return out.view(n, c, *size)


def pool(shape, seed=0):
    feat = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return torch.nn.MaxPool2d(2, 2, return_indices=True)(feat)


@pytest.mark.parametrize("size", [(6, 8), (7, 5)])
def test_values_go_back_to_pooled_positions(size):
    pooled, indices = pool((2, 3, *size))
    y = MaxUnpool(3, 3, 2)(pooled, indices, output_size=size)
    assert y.shape == (2, 3, *size)
    torch.testing.assert_close(y, unpool_reference(pooled, indices, size))
    # Exactly one non-zero (the max) per pooled 2x2 window, the rest zeros.
    assert (y != 0).sum() == pooled.numel()


def test_without_output_size_doubles_the_size():
    pooled, indices = pool((1, 2, 6, 4))
    assert MaxUnpool(2, 2, 2)(pooled, indices).shape == (1, 2, 6, 4)


def test_projects_channels_before_unpooling():
    torch.manual_seed(0)
    m = MaxUnpool(5, 3, 2)
    x = torch.randn(2, 5, 3, 4)
    _, indices = pool((2, 3, 6, 8))
    projected = F.conv2d(x, m.proj.weight, m.proj.bias)
    torch.testing.assert_close(m(x, indices), unpool_reference(projected, indices, (6, 8)))


def test_mismatched_indices_name_the_fix():
    _, indices = pool((1, 4, 6, 6))
    with pytest.raises(ValueError, match=r"decoder.channels\) must mirror the encoder"):
        MaxUnpool(3, 3, 2)(torch.randn(1, 3, 3, 3), indices)


@pytest.mark.parametrize("scale", [1, 4, 8])
def test_only_scale_two(scale):
    with pytest.raises(ValueError, match="only supports scale=2"):
        MaxUnpool(3, 3, scale)


def test_flags_pool_indices():
    assert MaxUnpool.needs_pool_indices is True


@pytest.mark.parametrize("cin,cout", [(4, 4), (3, 7)])
def test_parameter_count(cin, cout):
    expected = 0 if cin == cout else cin * cout + cout
    assert sum(p.numel() for p in MaxUnpool(cin, cout, 2).parameters()) == expected
