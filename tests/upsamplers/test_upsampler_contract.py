"""Contract shared by every upsampler preset in conf/upsampler/.

Each preset must instantiate through Hydra exactly as the decoder does, map
(N, in, H, W) -> (N, out, scale*H, scale*W) for odd and even sizes, backpropagate (under bf16
autocast too), train, and refuse unsupported scales with a clear error.
"""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from tests.helpers import upsampler_preset
from upbench.upsamplers.base import declaration, upsample

CONF = Path(__file__).resolve().parents[2] / "conf" / "upsampler"
# Every preset, so that a new conf/upsampler/NAME.yaml is held to the contract without
# touching this file.
PRESETS = sorted(p.stem for p in CONF.glob("*.yaml"))


def load(name):
    return OmegaConf.load(CONF / f"{name}.yaml")


def run(module, x, out_channels, scale=2):
    """Forward ``x`` with what the method declares it needs: a guide at the output size, or the
    indices of a 2x2 max-pool of a random map of that size."""
    n, _, h, w = x.shape
    generator = torch.Generator().manual_seed(1)
    big = torch.randn(n, out_channels, scale * h, scale * w, generator=generator)
    if declaration(module).needs_pool_indices:
        _, indices = F.max_pool2d(big, 2, 2, return_indices=True)
        return upsample(module, x, indices=indices)
    return upsample(module, x, guide=big)


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("scale", [2, 3, 4, 8])
@pytest.mark.parametrize("size", [(4, 6), (5, 3)])
def test_declared_scales_build_and_others_refused(name, scale, size):
    """A preset builds at every scale it declares and refuses the others with a message that
    names the scale and what to use instead."""
    cfg = load(name)
    if scale not in declaration(cfg).supported_scales(4):
        with pytest.raises(ValueError, match=r"(?s)scale.*\b(use|set)\b"):
            upsampler_preset(name, 4, 4, scale)
        return
    module = upsampler_preset(name, 4, 4, scale)
    y = run(module, torch.randn(2, 4, *size), 4, scale)
    assert y.shape == (2, 4, scale * size[0], scale * size[1])


def test_declarations_of_the_builtin_methods():
    """What the decoders rely on, stated per method (independent of the code that reads it)."""
    scales = {name: declaration(load(name)).supported_scales(4) for name in PRESETS}
    assert [s for s in (1, 2, 3, 4) if s in scales["maxunpool"]] == [2]
    assert [s for s in (1, 2, 3, 4, 8) if s in scales["stepwise"]] == [2, 4, 8]
    assert [s for s in (2, 3, 4) if s in scales["transposed_k2"]] == [2]
    assert [s for s in (2, 3, 4) if s in scales["transposed_k3"]] == [2, 3]
    assert [s for s in (2, 3, 4) if s in scales["dysample_pl"]] == [2]
    assert all(s in scales["carafe"] for s in (1, 2, 3, 5, 8))
    needs = {name: declaration(load(name)) for name in PRESETS}
    assert [n for n in PRESETS if needs[n].needs_pool_indices] == ["maxunpool"]
    assert [n for n in PRESETS if needs[n].needs_guide] == ["fade", "fade_lite", "sapa"]
    assert [n for n in PRESETS if needs[n].is_interpolation] == ["bilinear", "nearest"]


@pytest.mark.parametrize("name", PRESETS)
def test_added_projection_has_the_default_init(name):
    """The 1x1 conv added when in != out is PyTorch's default conv (uniform within
    1/sqrt(fan_in), non-zero bias) in every method, not Xavier in some (bound sqrt(6/(in+out)),
    zero bias)."""
    torch.manual_seed(0)
    module = upsampler_preset(name, 64, 16, 2)
    proj = getattr(module, "proj", None)
    if proj is None or isinstance(proj, nn.Identity):
        pytest.skip(f"{name} maps the channels inside the method, it adds no projection")
    assert proj.weight.abs().max() <= 1 / 64**0.5
    assert proj.weight.abs().max() > 0.9 / 64**0.5
    assert proj.bias.abs().min() > 0


@pytest.mark.parametrize("name", PRESETS)
# Input channels are multiples of 4: DySample's default groups=4 needs that (and says so).
@pytest.mark.parametrize("channels", [(8, 5), (4, 4)])
def test_yaml_instantiates_and_backpropagates(name, channels):
    assert (CONF / f"{name}.yaml").is_file()
    cin, cout = channels
    module = upsampler_preset(name, cin, cout, 2)
    x = torch.randn(2, cin, 5, 6, requires_grad=True)
    y = run(module, x, cout)
    assert y.shape == (2, cout, 10, 12)
    y.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for p in module.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16])
def test_runs_under_autocast(name, x_dtype):
    """Mixed precision (trainer.precision=bf16-mixed): the convs run in bfloat16 while x may be
    either dtype, and gradients stay finite."""
    module = upsampler_preset(name, 8, 8, 2)
    x = torch.randn(1, 8, 4, 6, dtype=x_dtype, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = run(module, x, 8)
    assert y.shape == (1, 8, 8, 12)
    y.float().square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", PRESETS)
def test_short_training_reduces_loss(name):
    """Fit a fixed random target: the output of a differently seeded copy (so it is reachable)."""
    x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    with torch.no_grad():
        target = run(upsampler_preset(name, 4, 8, 2), x, 8)
    torch.manual_seed(2)
    student = upsampler_preset(name, 4, 8, 2)
    opt = torch.optim.Adam(student.parameters(), lr=2e-2)
    losses = []
    for _ in range(40):
        loss = F.mse_loss(run(student, x, 8), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], losses[::8]


def test_declared_scales_read_the_options_of_a_partial():
    """A notebook factory states its options as keywords; the declaration reads them too."""
    import functools

    from upbench.upsamplers.transposed import TransposedConv

    k2 = declaration(functools.partial(TransposedConv, kernel_size=2)).supported_scales(4)
    assert [s for s in (2, 3, 4) if s in k2] == [2]
    assert 4 in declaration(TransposedConv).supported_scales(4)
