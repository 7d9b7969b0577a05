import pytest
import torch
from torch import nn

from tests.helpers import upsampler_preset
from upbench.metrics import CheckerboardScore

H = W = 32


def score(stride, maps):
    metric = CheckerboardScore(stride)
    metric.update(maps)
    return metric.compute().item()


def noise(n=64, c=3, seed=0):
    return torch.randn(n, c, H, W, generator=torch.Generator().manual_seed(seed))


def test_white_noise_sits_at_the_floor_of_one():
    # Every bin of windowed white noise has the same expected power, sigma^2 * sum(w^2).
    assert score(2, noise()) == pytest.approx(1.0, abs=0.1)
    assert score(4, noise(seed=1)) == pytest.approx(1.0, abs=0.1)


def test_checkerboard_on_noise_matches_closed_form():
    # x = n + a (-1)^(y+x), n ~ N(0, 1). With the periodic Hann window w (sum w = N/2,
    # sum w^2 = 3N/8) the pattern puts (a HW/4)^2 on (H/2, W/2) and nothing on any ring bin; the
    # noise puts 9HW/64 on every bin. Summed over the 3 artifact frequencies of stride 2:
    #   score = 1 + (a HW/4)^2 / (3 * 9HW/64) = 1 + 4 a^2 HW / 27  (= 2.517 for a = 0.1, 32x32).
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    a = 0.1
    maps = noise(n=128) + a * (-1.0) ** (yy + xx)
    assert score(2, maps) == pytest.approx(1 + 4 * a**2 * H * W / 27, rel=0.08)


def test_period_four_pattern_shows_at_stride_four_only():
    # a cos(2 pi x / 4) lies on (0, W/4) and (0, 3W/4), each with power (a HW/8)^2 after the
    # window; stride 4 has 15 artifact frequencies: score = 1 + 2 (a HW/8)^2 / (15 * 9HW/64)
    #   = 1 + 2 a^2 HW / 135 (= 2.365 for a = 0.3). For stride 2 the pattern is neither on an
    # artifact frequency nor on a ring bin, so the score stays at the floor.
    xx = torch.arange(W).float()
    a = 0.3
    maps = noise(n=128, seed=2) + a * torch.cos(2 * torch.pi * xx / 4)
    assert score(4, maps) == pytest.approx(1 + 2 * a**2 * H * W / 135, rel=0.08)
    assert score(2, maps) == pytest.approx(1.0, abs=0.1)


def test_the_map_is_not_divisible_by_the_stride():
    with pytest.raises(ValueError, match="multiples of stride"):
        CheckerboardScore(2).update(torch.randn(1, 1, 30, 31))
    with pytest.raises(ValueError, match="multiples of stride"):
        CheckerboardScore(4).update(torch.randn(1, 1, 12, 12))


def upsampler(name, channels):
    return upsampler_preset(name, channels, channels, 2)


def test_transposed_conv_k3_scores_far_above_resize_conv_pixelshuffle_and_bilinear():
    # Same untrained encoder (3x3 conv + ReLU, whose positive, non-zero-mean output is what
    # makes the uneven kernel overlap of K=3, S=2 visible) and same inputs for every upsampler.
    names = ["transposed_k3", "resize_conv", "pixelshuffle", "bilinear"]
    for seed in range(3):
        torch.manual_seed(seed)
        encoder = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        ups = {name: upsampler(name, 8) for name in names}
        with torch.no_grad():
            features = encoder(torch.rand(4, 3, H // 2, W // 2))
            scores = {name: score(2, up(features)) for name, up in ups.items()}
        assert scores["transposed_k3"] > 10 * max(scores["resize_conv"], scores["pixelshuffle"])
        assert scores["transposed_k3"] > 20
        # Interpolation has spectral zeros at the artifact frequencies: at or below the floor.
        assert scores["bilinear"] < 1.2
        assert scores["resize_conv"] < 2 and scores["pixelshuffle"] < 2
