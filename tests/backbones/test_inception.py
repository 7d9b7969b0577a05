"""Inception modules (Szegedy et al. 2015): parallel 1x1 / 3x3 / 5x5 / pool branches with 1x1
reductions, concatenated into the reported channels."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from upbench.backbones.inception import Inception, InceptionChannels, InceptionModule


def test_split_reproduces_googlenet_inception_3a_outputs():
    # GoogLeNet inception(3a): 64 (1x1), 128 (3x3), 32 (5x5), 32 (pool proj) = 256.
    c = InceptionChannels.split(256)
    assert (c.ch1x1, c.ch3x3, c.ch5x5, c.pool_proj) == (64, 128, 32, 32)
    assert c.ch3x3red < c.ch3x3 and c.ch5x5red < c.ch5x5


@pytest.mark.parametrize("out_channels", [8, 24, 37])
@pytest.mark.parametrize("stride", [1, 2])
def test_branches_concatenate_to_the_reported_channels(out_channels, stride):
    torch.manual_seed(0)
    module = InceptionModule(12, InceptionChannels.split(out_channels), stride=stride).eval()
    x = torch.randn(2, 12, 8, 8)
    outputs = [branch(x) for branch in module.branches()]
    assert sum(o.shape[1] for o in outputs) == module.out_channels == out_channels
    for o in outputs:
        assert o.shape[-2:] == (8 // stride, 8 // stride)
    torch.testing.assert_close(module(x), torch.cat(outputs, dim=1))


def _convs(seq: nn.Module) -> list[nn.Conv2d]:
    return [m for m in seq.modules() if isinstance(m, nn.Conv2d)]


def test_reductions_precede_3x3_and_5x5_and_follow_the_pool():
    net = Inception(width=8, num_stages=3, downsample="stride", dilate_last=1)
    modules = [m for m in net.modules() if isinstance(m, InceptionModule)]
    assert len(modules) == 3
    for m in modules:
        assert [c.kernel_size for c in _convs(m.branch1x1)] == [(1, 1)]
        for branch, k in ((m.branch3x3, 3), (m.branch5x5, 5)):
            reduce, spatial = _convs(branch)
            assert reduce.kernel_size == (1, 1) and spatial.kernel_size == (k, k)
            assert reduce.out_channels == spatial.in_channels < spatial.out_channels
        pool, proj = m.branch_pool[0], _convs(m.branch_pool)
        assert isinstance(pool, nn.MaxPool2d) and pool.kernel_size == 3
        assert [c.kernel_size for c in proj] == [(1, 1)]
