"""Contract shared by every upsampler preset in conf/upsampler/.

Each preset must instantiate through Hydra exactly as the decoder does, map
(N, in, H, W) -> (N, out, scale*H, scale*W) for odd and even sizes, backpropagate, train, and
refuse unsupported scales with a clear error.
"""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[2] / "conf" / "upsampler"
# Every preset, so that a new conf/upsampler/NAME.yaml is held to the contract without
# touching this file.
PRESETS = sorted(p.stem for p in CONF.glob("*.yaml"))
# Scales a preset refuses, with the error it must give.
UNSUPPORTED = {
    ("maxunpool", 4): "only supports scale=2",
    ("maxunpool", 8): "only supports scale=2",
    ("transposed_k2", 4): "leaves holes",
    ("transposed_k2", 8): "leaves holes",
    ("transposed_k3", 4): "leaves holes",
    ("transposed_k3", 8): "leaves holes",
    # Pixel-shuffles its 4-channel input first, which needs in_channels divisible by scale**2.
    ("dysample_pl", 4): r"divisible by scale\*\*2=16; use style='lp'",
    ("dysample_pl", 8): r"divisible by scale\*\*2=64; use style='lp'",
}


def build(name, in_channels, out_channels, scale):
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    return instantiate(cfg, in_channels=in_channels, out_channels=out_channels, scale=scale)


def run(module, x, out_channels):
    """Forward ``x``; for index-driven upsamplers, pool a random map of the target size first."""
    if not getattr(module, "needs_pool_indices", False):
        return module(x)
    n, _, h, w = x.shape
    big = torch.randn(n, out_channels, 2 * h, 2 * w, generator=torch.Generator().manual_seed(1))
    _, indices = F.max_pool2d(big, 2, 2, return_indices=True)
    return module(x, indices)


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("scale", [2, 4, 8])
@pytest.mark.parametrize("size", [(4, 6), (5, 3)])
def test_output_shape_or_clear_error(name, scale, size):
    if (name, scale) in UNSUPPORTED:
        # Hydra wraps the constructor's ValueError; its message is kept.
        with pytest.raises(InstantiationException, match=UNSUPPORTED[name, scale]):
            build(name, 4, 4, scale)
        return
    module = build(name, 4, 4, scale)
    y = run(module, torch.randn(2, 4, *size), 4)
    assert y.shape == (2, 4, scale * size[0], scale * size[1])


@pytest.mark.parametrize("name", PRESETS)
# Input channels are multiples of 4: DySample's default groups=4 needs that (and says so).
@pytest.mark.parametrize("channels", [(8, 5), (4, 4)])
def test_yaml_instantiates_and_backpropagates(name, channels):
    assert (CONF / f"{name}.yaml").is_file()
    cin, cout = channels
    module = build(name, cin, cout, 2)
    x = torch.randn(2, cin, 5, 6, requires_grad=True)
    y = run(module, x, cout)
    assert y.shape == (2, cout, 10, 12)
    y.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for p in module.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", PRESETS)
def test_short_training_reduces_loss(name):
    """Fit a fixed random target: the output of a differently seeded copy (so it is reachable)."""
    x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    with torch.no_grad():
        target = run(build(name, 4, 8, 2), x, 8)
    torch.manual_seed(2)
    student = build(name, 4, 8, 2)
    opt = torch.optim.Adam(student.parameters(), lr=2e-2)
    losses = []
    for _ in range(40):
        loss = F.mse_loss(run(student, x, 8), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], losses[::8]
