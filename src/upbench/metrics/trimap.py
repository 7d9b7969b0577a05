"""Mean IoU restricted to bands around the ground-truth boundaries (trimap evaluation)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from upbench.metrics._common import (
    LabelMetric,
    class_mean,
    dilate,
    label_masks,
)
from upbench.metrics.base import MetricDeclaration, register
from upbench.validation import positive_int


class TrimapMeanIoU(LabelMetric):
    """mIoU over the pixels within ``w`` px of a ground-truth boundary, for several widths w.

    Kohli, Ladicky & Torr, "Robust Higher Order Potentials for Enforcing Label Consistency",
    IJCV 2009; used for segmentation boundaries by Chen et al., DeepLab, ICLR 2015 / TPAMI 2018.

    A pixel p is in the band of width w iff some pixel with a different target label lies
    within Chebyshev distance w of p (a square (2w+1) x (2w+1) window inside the image). The band
    therefore straddles each label change with w px on either side (2w in all); the void label
    counts as a label, the image border does not. For each width one K x K confusion matrix
    (rows: target, columns: prediction) over the band's non-void pixels is summed over batches
    (and ranks); ``compute`` returns ``{"trimap_mIoU_w<w>": mIoU}`` (string keys, so that a
    prefixed ``MetricCollection`` can flatten it into loggable names), where
    IoU_c = TP / (TP + FP + FN) and the mean runs over the classes with a non-empty union in
    that band (NaN if none).

    Update shapes: preds (N, H, W) int labels or (N, K, H, W) logits; target (N, H, W) int.

    Args:
        num_classes, ignore_index, validate_args: see :class:`LabelMetric`.
        widths: band half-widths w in pixels (distinct positive ints).
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = 255,
        widths: Sequence[int] = (1, 2, 4, 8),
        validate_args: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, ignore_index, validate_args, **kwargs)
        widths = tuple(positive_int("each trimap width", w) for w in widths)
        if not widths or len(set(widths)) != len(widths):
            raise ValueError(f"widths must be a non-empty sequence of distinct ints, got {widths}")
        self.widths = widths
        self._add_count_state("confmat", len(widths), num_classes, num_classes)

    def update(self, preds: Tensor, target: Tensor) -> None:
        preds, target, valid = self._prepare(preds, target)
        k = self.num_classes
        # Void becomes label K so that a void region has boundaries like any other label.
        labels = target.where(valid, k)
        masks = label_masks(labels, k + 1)
        pair = target * k + preds
        for i, w in enumerate(self.widths):
            # p sees a different label within w px <=> more than one label in its window.
            band = dilate(masks, w, outside=False).sum(dim=1) > 1
            pairs = pair[band & valid]
            self.confmat[i] += torch.bincount(pairs, minlength=k * k).view(k, k)

    def compute(self) -> dict[str, Tensor]:
        tp = self.confmat.diagonal(dim1=-2, dim2=-1)
        union = self.confmat.sum(dim=-1) + self.confmat.sum(dim=-2) - tp
        return {
            self.key(w): class_mean(tp[i] / union[i].clamp_min(1), union[i] > 0)
            for i, w in enumerate(self.widths)
        }

    @staticmethod
    def key(width: int) -> str:
        """Name of the result for band width ``width`` in the dict returned by ``compute``."""
        return f"trimap_mIoU_w{width}"


register(MetricDeclaration("trimap", TrimapMeanIoU))
