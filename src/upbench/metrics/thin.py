"""Recall on thin structures (parts of objects at most a few pixels wide)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from upbench.metrics._common import LabelMetric
from upbench.metrics.base import MetricDeclaration, register


class ThinStructureRecall(LabelMetric):
    """Share of thin-structure pixels that are predicted with their correct class.

    Thin structures (<= 3 px wide: poles, wires, vessels, curve strokes) are what coarse
    upsamplers erase first, and they hardly move the mIoU. The data module marks them with a
    boolean ``thin`` mask; this metric sums, over all batches (and ranks),

        recall = #{p : thin(p), target(p) != void, pred(p) == target(p)}
                 / #{p : thin(p), target(p) != void}

    (NaN while no thin pixel has been seen).

    Update shapes: preds (N, H, W) int labels or (N, K, H, W) logits; target (N, H, W) int;
    thin (N, H, W) bool.

    Args:
        num_classes, ignore_index, validate_args: see :class:`LabelMetric`.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = 255,
        validate_args: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, ignore_index, validate_args, **kwargs)
        self._add_count_state("correct")
        self._add_count_state("total")

    def update(self, preds: Tensor, target: Tensor, thin: Tensor) -> None:
        preds, target, valid = self._prepare(preds, target)
        if thin.dtype != torch.bool or thin.shape != target.shape:
            raise ValueError(
                f"thin must be a bool mask shaped like target {tuple(target.shape)}, got "
                f"{thin.dtype} of shape {tuple(thin.shape)} (batch['thin'] of the data module)"
            )
        counted = thin & valid
        self.correct += (counted & (preds == target)).sum()
        self.total += counted.sum()

    def compute(self) -> Tensor:
        return (self.correct.double() / self.total).float()


# Only the data modules that mark thin structures provide batch["thin"]; others skip it.
register(
    MetricDeclaration(
        "thin_recall", ThinStructureRecall, inputs=("preds", "mask", "thin"), compared=True
    )
)
