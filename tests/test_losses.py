"""The ``loss`` group: each option's value against a reference written from its formula, and
every YAML of conf/loss/ training end to end."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import group_options
from upbench.data.base import SegmentationDataModule
from upbench.instantiate import instantiate
from upbench.losses import (
    SegmentationLoss,
    median_frequency_weights,
    resolve_class_weights,
    soft_dice_loss,
)
from upbench.results import read_results
from upbench.runner import seeded_setup, train

IGNORE = 255


def batch(num_classes: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, num_classes, 5, 6, generator=g, dtype=torch.float64)
    mask = torch.randint(0, num_classes - 1, (2, 5, 6), generator=g)  # last class absent
    mask[0, 0, :3] = IGNORE
    return logits, mask


def dice_reference(logits, mask, smooth: float = 1.0):
    """Per-class Dice over the batch by explicit loops over pixels (V-Net's equation)."""
    num_classes = logits.shape[1]
    probs = logits.softmax(dim=1)
    losses = []
    for c in range(num_classes):
        inter = p_sum = y_sum = 0.0
        for n in range(mask.shape[0]):
            for i in range(mask.shape[1]):
                for j in range(mask.shape[2]):
                    label = int(mask[n, i, j])
                    if label == IGNORE:
                        continue
                    p, y = float(probs[n, c, i, j]), float(label == c)
                    inter += p * y
                    p_sum += p
                    y_sum += y
        if y_sum > 0:  # classes absent from the labels are left out
            losses.append(1 - (2 * inter + smooth) / (p_sum + y_sum + smooth))
    return sum(losses) / len(losses)


def test_soft_dice_matches_the_loop_reference():
    logits, mask = batch()
    assert float(soft_dice_loss(logits, mask, IGNORE)) == pytest.approx(
        dice_reference(logits, mask), abs=1e-6
    )


def test_dice_ignores_ignored_pixels_and_rewards_the_right_answer():
    logits, mask = batch()
    changed = logits.clone()
    changed[0, :, 0, :3] = torch.randn(4, 3, dtype=torch.float64) * 10  # ignored pixels
    assert soft_dice_loss(changed, mask, IGNORE) == pytest.approx(
        float(soft_dice_loss(logits, mask, IGNORE))
    )
    perfect = F.one_hot(mask.clamp(max=3), 4).permute(0, 3, 1, 2).double() * 50
    assert float(soft_dice_loss(perfect, mask, IGNORE)) < 0.01
    assert float(soft_dice_loss(logits, mask, IGNORE)) > 0.3


def test_cross_entropy_terms_equal_torch_and_weights_add_up():
    logits, mask = batch()
    ce = F.cross_entropy(logits, mask, ignore_index=IGNORE)
    assert SegmentationLoss(4, IGNORE)(logits, mask) == pytest.approx(float(ce))
    both = SegmentationLoss(4, IGNORE, ce_weight=0.5, dice_weight=2.0)(logits, mask)
    assert float(both) == pytest.approx(0.5 * float(ce) + 2.0 * dice_reference(logits, mask))
    weights = [0.1, 1.0, 2.0, 4.0]
    weighted = SegmentationLoss(4, IGNORE, class_weights=weights)(logits.float(), mask)
    expected = F.cross_entropy(
        logits.float(), mask, weight=torch.tensor(weights), ignore_index=IGNORE
    )
    assert float(weighted) == pytest.approx(float(expected))


def test_dice_is_differentiable():
    logits, mask = batch()
    logits.requires_grad_(True)
    SegmentationLoss(4, IGNORE, dice_weight=1.0)(logits, mask).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert torch.all(logits.grad[0, :, 0, :3] == 0)  # ignored pixels get no gradient


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ce_weight": 0.0, "dice_weight": 0.0}, "positive sum"),
        ({"class_weights": [1.0, 2.0]}, "loss.class_weights needs 4"),
        ({"class_weights": [1.0, 1.0, -1.0, 1.0]}, "non-negative"),
        ({"class_weights": "balanced"}, "loss.class_weights='balanced': give 4 numbers"),
        ({"class_weights": "median_frequency"}, "computed from the training data"),
    ],
)
def test_bad_options_are_refused_with_the_key(options, message):
    with pytest.raises(ValueError, match=message):
        SegmentationLoss(4, IGNORE, **options)


class MaskData(SegmentationDataModule):
    """A data module whose training split is the given masks (images are zeros)."""

    num_classes = 4

    def __init__(self, masks: torch.Tensor):
        super().__init__(batch_size=2)
        self.masks = masks

    def setup(self, stage=None):
        self.train_set = [{"image": torch.zeros(1, *m.shape), "mask": m} for m in self.masks]


def test_class_frequencies_and_median_frequency_weights_follow_the_definition():
    g = torch.Generator().manual_seed(0)
    masks = torch.randint(0, 3, (5, 6, 7), generator=g)  # class 3 never occurs
    masks[0][masks[0] == 2] = 0  # class 2 absent from image 0: its pixels do not count for 2
    masks[1, :2] = IGNORE
    # freq[c] = pixels of c / labelled pixels of the images containing c, by loops over images
    expected = []
    for c in range(4):
        pixels = sum(int((m == c).sum()) for m in masks)
        total = sum(int((m != IGNORE).sum()) for m in masks if (m == c).any())
        expected.append(pixels / total if total else 0.0)
    frequencies = MaskData(masks).class_frequencies()
    assert frequencies.tolist() == pytest.approx(expected)
    median = sorted(expected[:3])[1]
    assert median_frequency_weights(frequencies) == pytest.approx(
        [median / expected[0], median / expected[1], median / expected[2], 0.0]
    )


def test_class_frequencies_leave_the_global_rng_where_it_was():
    torch.manual_seed(0)
    MaskData(torch.zeros(3, 4, 4, dtype=torch.long)).class_frequencies()
    after_pass = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(after_pass, torch.rand(3))


def test_resolve_class_weights_replaces_only_median_frequency():
    data = MaskData(torch.tensor([[[0, 0, 0, 1]], [[0, 0, 2, 3]]]))
    plain = {"_target_": "upbench.losses.SegmentationLoss", "class_weights": None}
    assert resolve_class_weights(plain, data.class_frequencies) is plain
    resolved = resolve_class_weights({**plain, "class_weights": "median_frequency"},
                                     data.class_frequencies)  # fmt: skip
    # freq: 0 -> 5/8, 1 -> 1/4, 2 and 3 -> 1/4; median 1/4
    assert resolved["class_weights"] == pytest.approx([0.4, 1.0, 1.0, 1.0])


@pytest.mark.parametrize("loss", group_options("loss"))
def test_every_loss_option_builds_and_trains(tiny_cfg, tmp_path, loss):
    cfg = tiny_cfg(f"loss={loss}", "trainer.max_epochs=2")
    node = resolve_class_weights(cfg.loss, instantiate(cfg.data).class_frequencies)
    module = instantiate(node, num_classes=4, ignore_index=IGNORE)
    assert isinstance(module, SegmentationLoss)
    train(cfg)
    record = read_results(tmp_path)
    assert record["status"] == "finished", record["error"]
    assert record["config"]["loss"]["_target_"] == "upbench.losses.SegmentationLoss"
    assert record["metrics"]["test/loss"] > 0


def test_weighted_ce_is_built_with_the_weights_of_its_training_data(tiny_cfg):
    cfg = tiny_cfg("loss=weighted_ce")
    _, task = seeded_setup(cfg)
    weights = median_frequency_weights(instantiate(cfg.data).class_frequencies())
    assert task.loss.class_weights.tolist() == pytest.approx(weights)
    # The node the checkpoint stores holds the numbers, so it reloads without the data.
    assert task.hparams["loss"]["class_weights"] == pytest.approx(weights)
    assert weights[0] == min(weights) < 0.2  # background, most of the pixels, weighs least
    assert cfg.loss.class_weights == "median_frequency"  # the run's recorded config: the recipe


def test_loss_presets_are_what_their_names_say(tiny_cfg):
    def terms(name: str) -> tuple[float, float]:
        loss = instantiate(tiny_cfg(f"loss={name}").loss, num_classes=4, ignore_index=IGNORE)
        return loss.ce_weight, loss.dice_weight

    assert terms("ce") == (1.0, 0.0)
    assert terms("ce_dice") == (1.0, 2.0)  # Dice x 2: experiments/README.md
    assert terms("dice") == (0.0, 1.0)
