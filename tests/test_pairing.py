"""Runs at the same seed are paired: whatever the upsampler, the same data, the same training
order and the same backbone initialisation (what makes per-seed differences paired)."""

from __future__ import annotations

import pytest
import torch

from upbench.runner import seeded_setup


def setup_of(tiny_cfg, *overrides: str):
    """The data module, the task and the training order of epochs 0 and 1, as a run builds
    them (the loader is made right after seeding, as in a run's process)."""
    datamodule, task = seeded_setup(tiny_cfg("backbone.downsample=maxpool", *overrides))
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    orders = []
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)  # what Lightning does at the start of every epoch
        orders.append(list(loader.sampler))
    return datamodule, task, orders


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


UPSAMPLERS = ["bilinear", "carafe", "pixelshuffle", "maxunpool", "dysample", "stepwise"]


@pytest.mark.parametrize("upsampler", UPSAMPLERS[1:])
def test_same_seed_same_backbone_weights_data_and_order_across_upsamplers(tiny_cfg, upsampler):
    reference_data, reference, reference_order = setup_of(tiny_cfg, "upsampler=bilinear", "seed=3")
    data, task, order = setup_of(tiny_cfg, f"upsampler={upsampler}", "seed=3")
    assert_same_state(reference.model.backbone.state_dict(), task.model.backbone.state_dict())
    # (test_another_seed_changes_the_backbone_and_the_order shows the comparison can fail.)
    assert torch.equal(reference_data.train_set.images, data.train_set.images)
    assert torch.equal(reference_data.train_set.masks, data.train_set.masks)
    assert reference_order == order


def test_another_seed_changes_the_backbone_and_the_order(tiny_cfg):
    _, a, order_a = setup_of(tiny_cfg, "upsampler=bilinear", "seed=3")
    _, b, order_b = setup_of(tiny_cfg, "upsampler=bilinear", "seed=4")
    weights_a, weights_b = a.model.backbone.state_dict(), b.model.backbone.state_dict()
    assert any(
        not torch.equal(weights_a[k], weights_b[k]) for k in weights_a if k.endswith("weight")
    )
    assert order_a[0] != order_b[0]
    assert order_a[0] != order_a[1]  # reshuffled every epoch


def test_a_fixed_data_seed_keeps_the_dataset_across_seeds(tiny_cfg):
    """The table experiments fix data.seed, so seeds vary initialisation and order only."""
    data_a, _, order_a = setup_of(tiny_cfg, "seed=3", "data.seed=0")
    data_b, _, order_b = setup_of(tiny_cfg, "seed=4", "data.seed=0")
    assert torch.equal(data_a.train_set.images, data_b.train_set.images)
    assert order_a[0] != order_b[0]


def test_a_loss_weighted_by_the_training_data_keeps_the_pairing(tiny_cfg):
    """loss=weighted_ce reads the training masks before the network is built; the pass must
    leave the seeded initialisation and the order as loss=ce has them."""
    _, plain, plain_order = setup_of(tiny_cfg, "loss=ce", "seed=3")
    _, weighted, weighted_order = setup_of(tiny_cfg, "loss=weighted_ce", "seed=3")
    assert_same_state(plain.model.state_dict(), weighted.model.state_dict())
    assert plain_order == weighted_order
