import itertools

import pytest
import torch

from upbench.ops.carafe import carafe


def carafe_loops(features, masks, k, groups, s):
    """CARAFE, Wang et al. ICCV 2019 Eq. (4), one output value at a time:
    out[n, c, i, j] = sum_{dy,dx} masks[n, g*k^2 + dy*k + dx, i, j]
                      * features[n, c, i//s + dy - k//2, j//s + dx - k//2]  (0 outside)."""
    n, c, h, w = features.shape
    out = torch.zeros(n, c, s * h, s * w, dtype=features.dtype)
    r = k // 2
    for b, ch, i, j in itertools.product(range(n), range(c), range(s * h), range(s * w)):
        g = ch // (c // groups)
        total = 0.0
        for dy, dx in itertools.product(range(k), range(k)):
            y, x = i // s + dy - r, j // s + dx - r
            if 0 <= y < h and 0 <= x < w:
                total += masks[b, g * k * k + dy * k + dx, i, j] * features[b, ch, y, x]
        out[b, ch, i, j] = total
    return out


def random_inputs(n, c, h, w, k, groups, s, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(n, c, h, w, generator=gen, dtype=dtype)
    logits = torch.randn(n, groups, k * k, s * h, s * w, generator=gen, dtype=dtype)
    masks = logits.softmax(2).reshape(n, groups * k * k, s * h, s * w)
    return features, masks


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("s", [2, 4])
def test_matches_paper_formula(groups, k, s):
    # 3 x 4 input with k = 5: every output pixel's window crosses a border.
    features, masks = random_inputs(2, 4, 3, 4, k, groups, s)
    torch.testing.assert_close(
        carafe(features, masks, k, groups, s), carafe_loops(features, masks, k, groups, s)
    )


def test_groups_use_their_own_kernels():
    """Channel c uses kernel group c // (C / G): with group 0 all on the centre tap and group 1
    all on the top-left tap, group 0 is nearest upsampling and group 1 a shifted copy of it."""
    k, s = 3, 2
    features = torch.arange(2 * 2 * 3 * 3, dtype=torch.float32).view(1, 4, 3, 3)
    masks = torch.zeros(1, 2 * k * k, 3 * s, 3 * s)
    masks[:, 4] = 1  # group 0, tap (1, 1)
    masks[:, 9 + 0] = 1  # group 1, tap (0, 0)
    out = carafe(features, masks, k, 2, s)
    nearest = features.repeat_interleave(s, 2).repeat_interleave(s, 3)
    torch.testing.assert_close(out[:, :2], nearest[:, :2])
    shifted = torch.zeros_like(features[:, 2:])
    shifted[..., 1:, 1:] = features[:, 2:, :-1, :-1]
    torch.testing.assert_close(out[:, 2:], shifted.repeat_interleave(s, 2).repeat_interleave(s, 3))


@pytest.mark.parametrize(("k", "groups", "s"), [(3, 1, 2), (5, 2, 2), (3, 1, 3), (3, 2, 1)])
def test_gradcheck_float64(k, groups, s):
    features, masks = random_inputs(1, 2 * groups, 2, 3, k, groups, s, dtype=torch.float64)
    features.requires_grad_()
    masks.requires_grad_()
    assert torch.autograd.gradcheck(lambda f, m: carafe(f, m, k, groups, s), (features, masks))


@pytest.mark.parametrize("wrt", [0, 1])
def test_gradient_of_one_input_only(wrt):
    """With only one input requiring grad, the backward skips the other and stays exact."""
    inputs = list(random_inputs(1, 4, 3, 3, 3, 2, 2, dtype=torch.float64))
    inputs[wrt].requires_grad_()
    (grad,) = torch.autograd.grad(carafe(*inputs, 3, 2, 2).square().sum(), inputs[wrt])
    (expected,) = torch.autograd.grad(carafe_loops(*inputs, 3, 2, 2).square().sum(), inputs[wrt])
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize(
    ("features_shape", "masks_shape", "k", "groups", "s", "match"),
    [
        ((1, 4, 3, 3), (1, 9, 6, 6), 4, 1, 2, "odd"),
        ((1, 3, 3, 3), (1, 18, 6, 6), 3, 2, 2, "divide the 3 feature channels"),
        ((1, 4, 3, 3), (1, 9, 6, 6), 3, 2, 2, r"masks must have shape"),
        ((1, 4, 3, 3), (1, 9, 5, 6), 3, 1, 2, r"masks must have shape"),
        ((4, 3, 3), (1, 9, 6, 6), 3, 1, 2, "4-D"),
        ((1, 4, 3, 3), (1, 9, 6, 6), 3, 1, 0, "scale_factor must be a positive int"),
    ],
)
def test_bad_arguments_raise(features_shape, masks_shape, k, groups, s, match):
    with pytest.raises(ValueError, match=match):
        carafe(torch.randn(features_shape), torch.rand(masks_shape), k, groups, s)
