"""Training losses of the ``loss`` config group.

Every loss is built by the runner as ``instantiate(cfg.loss, num_classes=..., ignore_index=...)``
(after :func:`resolve_class_weights` has put the training data's weights in a node that asks
for them) and called as ``loss(logits, mask)`` with logits (N, K, H, W) and an int64 mask
(N, H, W) whose ``ignore_index`` pixels count nowhere; it returns a scalar.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

# ``loss.class_weights: median_frequency``: weights computed from the training data by
# :func:`resolve_class_weights` before the loss is built (``loss=weighted_ce``).
MEDIAN_FREQUENCY = "median_frequency"


def median_frequency_weights(frequencies: Tensor) -> list[float]:
    """Median frequency balancing (Eigen & Fergus, ICCV 2015, as SegNet trains): ``w[c] =
    median(freq) / freq[c]`` over the classes that occur (``freq`` from
    :meth:`upbench.data.base.SegmentationDataModule.class_frequencies`), so the median class
    weighs 1, rarer ones more (for an even count of classes the median is the lower middle
    value, as ``torch.median``); a class that never occurs in training gets 0 (it has no pixels
    to weigh). (num_classes,) -> list of num_classes floats."""
    present = frequencies > 0
    if not present.any():
        raise ValueError(f"loss.class_weights={MEDIAN_FREQUENCY}: the training split has no labels")
    median = frequencies[present].median()
    weights = torch.where(present, median / frequencies.clamp(min=1e-12), 0.0)
    return [float(w) for w in weights]


def resolve_class_weights(
    loss: Mapping[str, Any], class_frequencies: Callable[[], Tensor]
) -> Mapping[str, Any]:
    """``loss`` (the ``loss`` config node) with ``class_weights: median_frequency`` replaced by
    the weights of the training data, so that the built loss, and the checkpoint that stores
    its node, hold numbers; any other node is returned as it is (``class_frequencies`` is only
    called when needed: it is a pass over the training masks)."""
    if loss.get("class_weights") != MEDIAN_FREQUENCY:
        return loss
    weights = median_frequency_weights(class_frequencies())
    log.info("loss.class_weights=%s: %s", MEDIAN_FREQUENCY, [round(w, 4) for w in weights])
    return {**loss, "class_weights": weights}


def soft_dice_loss(logits: Tensor, mask: Tensor, ignore_index: int, smooth: float = 1.0) -> Tensor:
    """Multi-class soft Dice loss (Milletari et al., V-Net, 3DV 2016), one Dice per class over the
    whole batch, averaged over the classes present in the batch's labels or predictions.

    ``1 - (2 sum(p * y) + smooth) / (sum(p) + sum(y) + smooth)`` per class, with ``p`` the softmax
    probabilities and ``y`` the one-hot labels, both zeroed on ignored pixels. Every class weighs
    the same whatever its pixel count, which is why Dice counters the imbalance of small classes
    (a 4-px blob against 95 % background) that pixel-averaged cross-entropy leaves alone.
    """
    num_classes = logits.shape[1]
    valid = (mask != ignore_index).unsqueeze(1)
    probs = logits.float().softmax(dim=1) * valid
    onehot = F.one_hot(mask.where(valid.squeeze(1), 0), num_classes).permute(0, 3, 1, 2)
    onehot = onehot.to(probs.dtype) * valid
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)
    cardinality = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * intersection + smooth) / (cardinality + smooth)
    # A class absent from both labels and predictions has dice ~1 and no gradient; leaving it
    # in the mean would only shrink the loss of the classes that are there.
    present = onehot.sum(dims) > 0
    return (1 - dice[present]).mean() if present.any() else logits.sum() * 0


class SegmentationLoss(nn.Module):
    """``ce_weight * cross-entropy + dice_weight * soft Dice``.

    Args:
        num_classes, ignore_index: label space of the dataset (given by the runner).
        ce_weight, dice_weight: weights of the two terms (``loss=ce``: 1 and 0;
            ``loss=ce_dice``: 1 and 1; ``loss=dice``: 0 and 1).
        class_weights: per-class weights of the cross-entropy, one per class, or ``None`` for
            unweighted (``loss=weighted_ce`` gives the ones :func:`resolve_class_weights`
            computes from the training data).
        label_smoothing: cross-entropy label smoothing.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        ce_weight: float = 1.0,
        dice_weight: float = 0.0,
        class_weights: Sequence[float] | None = None,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        if ce_weight < 0 or dice_weight < 0 or ce_weight + dice_weight <= 0:
            raise ValueError(
                f"loss.ce_weight={ce_weight} and loss.dice_weight={dice_weight} must be >= 0 "
                "with a positive sum"
            )
        if class_weights == MEDIAN_FREQUENCY:
            raise ValueError(
                f"loss.class_weights={MEDIAN_FREQUENCY} is computed from the training data: build "
                "the loss node through upbench.losses.resolve_class_weights (train.py does)"
            )
        if isinstance(class_weights, str):
            raise ValueError(
                f"loss.class_weights={class_weights!r}: give {num_classes} numbers (one per class "
                f"of the data), '{MEDIAN_FREQUENCY}', or null"
            )
        if class_weights is not None:
            class_weights = list(class_weights)
            if len(class_weights) != num_classes or min(class_weights) < 0:
                raise ValueError(
                    f"loss.class_weights needs {num_classes} non-negative numbers (one per class "
                    f"of the data), got {class_weights}"
                )
        self.ignore_index = ignore_index
        self.ce_weight = ce_weight
        self.dice_weight = dice_weight
        self.label_smoothing = label_smoothing
        self.register_buffer(
            "class_weights",
            None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32),
            persistent=False,
        )

    def forward(self, logits: Tensor, mask: Tensor) -> Tensor:
        loss = logits.new_zeros((), dtype=torch.float32)
        if self.ce_weight:
            ce = F.cross_entropy(
                logits,
                mask,
                weight=self.class_weights,
                ignore_index=self.ignore_index,
                label_smoothing=self.label_smoothing,
            )
            loss = loss + self.ce_weight * ce
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(logits, mask, self.ignore_index)
        return loss
