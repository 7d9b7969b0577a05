import itertools

import pytest
import torch

from upbench.upsamplers.transposed import TransposedConv


def lecture_h_out(h_in, s, p, k, d, op):
    """H_out = (H_in - 1) S - 2P + D (K - 1) + output_padding + 1 (cnn-lecture-2, section 3)."""
    return (h_in - 1) * s - 2 * p + d * (k - 1) + op + 1


def has_holes(s, k, d):
    """Brute force: does some output position of the full (uncropped) map get no kernel tap?"""
    h_in = d * k + s + 2  # the interior below then spans more than one period of s
    covered = {i * s + j * d for i in range(h_in) for j in range(k)}
    interior = range(d * (k - 1), (h_in - 1) * s + 1)
    return any(pos not in covered for pos in interior)


# Combinations whose formula gives an empty map are left out: PyTorch then either returns an
# empty tensor or raises, depending on the backend, so there is no size to compare.
GRID = [
    combo
    for combo in itertools.product(
        [1, 2, 5],  # H_in
        [1, 2, 3],  # S
        [0, 1, 2],  # P
        [1, 2, 3, 4],  # K
        [1, 2],  # D
        [0, 1, 2],  # output_padding
    )
    if lecture_h_out(*combo) >= 1
]


@pytest.mark.parametrize("h_in,s,p,k,d,op", GRID)
def test_output_size_matches_lecture_formula(h_in, s, p, k, d, op):
    kwargs = {"kernel_size": k, "padding": p, "output_padding": op, "dilation": d}
    if has_holes(s, k, d):
        with pytest.raises(ValueError, match="leaves holes"):
            TransposedConv(1, 1, s, **kwargs)
        return
    if op >= max(s, d):
        with pytest.raises(ValueError, match="must be smaller than max"):
            TransposedConv(1, 1, s, **kwargs)
        return
    expected = (lecture_h_out(h_in, s, p, k, d, op), lecture_h_out(h_in + 1, s, p, k, d, op))
    y = TransposedConv(1, 1, s, **kwargs)(torch.randn(1, 1, h_in, h_in + 1))
    assert y.shape[-2:] == expected


@pytest.mark.parametrize(
    "s,k,d",
    [
        (s, k, d)
        for s, k, d in itertools.product([1, 2, 3, 4, 8], [1, 2, 3, 4, 5, 8, 16], [1, 2])
        if not has_holes(s, k, d)  # refused at construction, as the grid test checks
    ],
)
def test_solved_padding_gives_exact_scale(s, k, d):
    try:
        m = TransposedConv(2, 3, s, kernel_size=k, dilation=d)
    except ValueError as err:
        # The only unsolvable case: an even effective kernel at stride 1 cannot keep the size.
        assert s == 1 and d == 1 and k % 2 == 0 and "must be smaller than max" in str(err)
        return
    for h in (3, 4):
        assert m(torch.randn(1, 2, h, h + 1)).shape == (1, 3, s * h, s * (h + 1))


@pytest.mark.parametrize(
    "scale,k,p,op",
    [(2, 4, 1, 0), (2, 2, 0, 0), (2, 3, 1, 1), (4, 8, 2, 0), (3, 6, 2, 1), (8, 16, 4, 0)],
)
def test_presets_padding(scale, k, p, op):
    conv = TransposedConv(1, 1, scale, kernel_size=k).conv
    assert (conv.kernel_size, conv.stride, conv.padding, conv.output_padding) == (
        (k, k),
        (scale, scale),
        (p, p),
        (op, op),
    )


def test_default_kernel_is_twice_the_scale():
    for scale in (2, 4):
        assert TransposedConv(1, 1, scale).conv.kernel_size == (2 * scale, 2 * scale)


def test_one_given_value_is_completed():
    assert TransposedConv(1, 1, 2, kernel_size=3, padding=1).conv.output_padding == (1, 1)
    assert TransposedConv(1, 1, 2, kernel_size=3, output_padding=1).conv.padding == (1, 1)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"kernel_size": 4, "padding": 0}, "padding=0 is too small"),
        ({"kernel_size": 4, "output_padding": 1}, "no padding gives an output of exactly"),
        ({"kernel_size": 4, "padding": 3}, "must be smaller than max"),
        ({"kernel_size": 4, "padding": -1}, "padding must be a non-negative int"),
        ({"kernel_size": 0}, "kernel_size must be a positive integer"),
        ({"kernel_size": 2, "dilation": 2}, "leaves holes"),
    ],
)
def test_impossible_combinations_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TransposedConv(1, 1, 2, **kwargs)


@pytest.mark.parametrize("cin,cout,k", [(3, 5, 4), (8, 2, 2), (4, 4, 3)])
def test_parameter_count(cin, cout, k):
    m = TransposedConv(cin, cout, 2, kernel_size=k)
    assert sum(p.numel() for p in m.parameters()) == k * k * cin * cout + cout


def test_k3_is_uneven_and_k2_is_even():
    """With constant weights and input, K=3,S=2 gives alternating sums; K=2,S=2 a flat map."""

    def response(k):
        m = TransposedConv(1, 1, 2, kernel_size=k, bias=False)
        torch.nn.init.ones_(m.conv.weight)
        return m(torch.ones(1, 1, 4, 4))[0, 0, 2:-2, 2:-2]

    assert torch.all(response(2) == 1)
    k3 = response(3)
    # Even rows/cols get 2 taps per axis, odd ones 1: the checkerboard of Odena et al. 2016.
    assert k3.unique().tolist() == [1.0, 2.0, 4.0]
