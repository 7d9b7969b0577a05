"""Learning-rate schedules of the ``scheduler`` node, called as ``scheduler(optimizer, T_max=total
training steps)`` and stepped every batch."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR


def warmup_cosine(
    optimizer: Optimizer,
    T_max: int,
    warmup_fraction: float = 0.05,
    warmup_start_factor: float = 0.01,
    eta_min: float = 0.0,
) -> LRScheduler:
    """Linear warm-up from ``warmup_start_factor * lr`` to ``lr`` over the first
    ``warmup_fraction`` of the ``T_max`` steps, then cosine annealing to ``eta_min`` (Goyal et al.
    2017, Loshchilov & Hutter 2017). The warm-up keeps AdamW's first, badly estimated steps from
    knocking a freshly initialised network into the all-background solution."""
    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(f"scheduler.warmup_fraction must be in [0, 1), got {warmup_fraction}")
    warmup = round(warmup_fraction * T_max)
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, T_max - warmup), eta_min=eta_min)
    if warmup == 0:
        return cosine
    linear = LinearLR(optimizer, start_factor=warmup_start_factor, total_iters=warmup)
    return SequentialLR(optimizer, [linear, cosine], milestones=[warmup])
