"""The warm-up + cosine schedule against its closed form."""

from __future__ import annotations

import math

import pytest
import torch

from upbench.schedulers import warmup_cosine

BASE_LR = 0.01


def learning_rates(total: int, **options) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE_LR)
    scheduler = warmup_cosine(optimizer, T_max=total, **options)
    rates = []
    for _ in range(total):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_linear_warmup_then_cosine_to_zero():
    total, fraction, start = 100, 0.1, 0.01
    rates = learning_rates(total, warmup_fraction=fraction, warmup_start_factor=start)
    warmup = 10
    for step in range(warmup):
        factor = start + (1 - start) * step / warmup
        assert rates[step] == pytest.approx(BASE_LR * factor)
    for step in range(warmup, total):
        t = step - warmup
        expected = BASE_LR * (1 + math.cos(math.pi * t / (total - warmup))) / 2
        assert rates[step] == pytest.approx(expected, abs=1e-9)
    assert max(rates) == pytest.approx(BASE_LR)


def test_no_warmup_is_plain_cosine_and_bad_fraction_is_refused():
    rates = learning_rates(50, warmup_fraction=0.0)
    assert rates[0] == pytest.approx(BASE_LR)
    assert rates[25] == pytest.approx(BASE_LR / 2)
    with pytest.raises(ValueError, match="scheduler.warmup_fraction"):
        learning_rates(10, warmup_fraction=1.0)
