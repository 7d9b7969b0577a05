"""What the contract tests do not cover for the content-aware upsamplers (CARAFE, DySample): a
bf16 input under autocast, and learning a teacher whose kernels / points are far from the
near-identity start."""

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import upsampler_preset

PRESETS = ["carafe", "dysample", "dysample_pl", "dysample_dyscope"]


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16])
def test_runs_under_autocast(name, x_dtype):
    """Mixed precision: the convs run in bfloat16 while x may be either dtype."""
    module = upsampler_preset(name, 8, 8, 2)
    x = torch.randn(1, 8, 4, 5, dtype=x_dtype, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = module(x)
    assert y.shape == (1, 8, 8, 10)
    y.float().square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", PRESETS)
def test_short_training_reduces_loss(name):
    """Fit the output of a teacher copy whose weights are redrawn large, so that its kernels /
    sampling points are far from the student's near-identity start but reachable by it."""
    x = torch.randn(2, 16, 6, 6, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    teacher = upsampler_preset(name, 16, 16, 2)
    with torch.no_grad():
        for p in teacher.parameters():
            p.normal_(std=0.1)
        target = teacher(x)
    torch.manual_seed(2)
    student = upsampler_preset(name, 16, 16, 2)
    opt = torch.optim.Adam(student.parameters(), lr=2e-2)
    losses = []
    for _ in range(30):
        loss = F.mse_loss(student(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::6]
