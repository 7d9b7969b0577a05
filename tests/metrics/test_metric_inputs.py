"""Input handling and distributed reduction, shared by all metrics."""

import pytest
import torch
from torchmetrics.utilities.data import dim_zero_sum

from tests.metrics import reference as ref
from upbench.metrics import (
    BoundaryFScore,
    BoundaryIoU,
    CheckerboardScore,
    ThinStructureRecall,
    TrimapMeanIoU,
)

K = 4
LABEL_METRICS = [
    lambda: BoundaryIoU(K, dilation=1),
    lambda: BoundaryFScore(K, tolerance=1),
    lambda: TrimapMeanIoU(K, widths=(1, 3)),
    lambda: ThinStructureRecall(K),
]


def label_batches(num_batches: int):
    """Batches (preds, target[, thin]) of random blocky maps, 2 images of 12 x 10 each."""
    preds, target = ref.random_scenes(2 * num_batches, 12, 10, K, seed=3)
    thin = torch.rand(target.shape, generator=torch.Generator().manual_seed(4)) < 0.3
    return [(preds[i : i + 2], target[i : i + 2], thin[i : i + 2]) for i in range(0, len(preds), 2)]


def update(metric, batch):
    preds, target, thin = batch
    if isinstance(metric, ThinStructureRecall):
        metric.update(preds, target, thin)
    else:
        metric.update(preds, target)


def as_floats(value):
    return {k: v.item() for k, v in value.items()} if isinstance(value, dict) else value.item()


@pytest.mark.parametrize("make", LABEL_METRICS)
def test_two_ranks_merged_equal_one_process(make):
    # Halves of the data on two "ranks" whose states are then summed (what Lightning's DDP sync
    # does with dist_reduce_fx="sum"), against one instance over everything. The halves hold
    # different numbers of batches, so averaging per batch or per rank would not agree.
    batches = label_batches(5)
    whole, rank0, rank1 = make(), make(), make()
    for i, batch in enumerate(batches):
        update(whole, batch)
        update(rank0 if i < 2 else rank1, batch)
    rank0.merge_state(rank1)
    assert as_floats(rank0.compute()) == pytest.approx(as_floats(whole.compute()))
    # Lightning's sync applies these same per-state reductions across processes.
    assert rank0._reductions and all(fn is dim_zero_sum for fn in rank0._reductions.values())


def test_checkerboard_two_ranks_merged_equal_one_process():
    gen = torch.Generator().manual_seed(0)
    maps = [torch.randn(n, 3, 16, 16, generator=gen) for n in (1, 2, 4)]
    whole, rank0, rank1 = CheckerboardScore(2), CheckerboardScore(2), CheckerboardScore(2)
    for i, x in enumerate(maps):
        whole.update(x)
        (rank0 if i == 0 else rank1).update(x)
    rank0.merge_state(rank1)
    assert rank0.compute().item() == pytest.approx(whole.compute().item(), rel=1e-6)


@pytest.mark.parametrize("make", LABEL_METRICS)
def test_logits_are_reduced_with_argmax(make):
    preds, target, thin = label_batches(1)[0]
    logits = torch.randn(*preds.shape, K).movedim(-1, 1)
    logits.scatter_(1, preds.unsqueeze(1), 10.0)
    from_labels, from_logits = make(), make()
    update(from_labels, (preds, target, thin))
    update(from_logits, (logits, target, thin))
    assert as_floats(from_logits.compute()) == as_floats(from_labels.compute())


@pytest.mark.parametrize(
    "preds,target,match",
    [
        (torch.zeros(1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long), "logits"),
        (torch.zeros(4, 4, dtype=torch.long), torch.zeros(4, 4, dtype=torch.long), "preds"),
        (torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 4), "target"),
        (torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 8, 8, dtype=torch.long), "same"),
        (torch.full((1, 4, 4), K), torch.zeros(1, 4, 4, dtype=torch.long), "preds contain"),
        (torch.zeros(1, 4, 4, dtype=torch.long), torch.full((1, 4, 4), 7), "ignore_index"),
    ],
)
def test_bad_input_raises_a_clear_error(preds, target, match):
    with pytest.raises(ValueError, match=match):
        BoundaryIoU(K).update(preds, target)


@pytest.mark.parametrize(
    "make",
    [
        lambda: BoundaryIoU(0),
        lambda: BoundaryIoU(2, dilation=0),
        lambda: BoundaryIoU(2, dilation_ratio=-0.1),
        lambda: BoundaryFScore(2, tolerance=-1),
        lambda: TrimapMeanIoU(2, widths=(1, 1)),
        lambda: TrimapMeanIoU(2, widths=()),
        lambda: TrimapMeanIoU(2, widths=(0,)),
        lambda: ThinStructureRecall(2, ignore_index=1.5),
        lambda: CheckerboardScore(1),
    ],
)
def test_bad_constructor_arguments_raise(make):
    with pytest.raises(ValueError):
        make()
