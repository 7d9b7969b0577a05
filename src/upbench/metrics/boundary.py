"""Boundary-sensitive segmentation metrics: Boundary IoU and boundary F-score."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from upbench.metrics._common import (
    LabelMetric,
    check_ratio,
    class_mean,
    dilate,
    inner_band,
    label_masks,
    radius_from_diagonal,
)
from upbench.metrics.base import MetricDeclaration, register
from upbench.validation import non_negative_int


def _class_masks(labels: Tensor, valid: Tensor, num_classes: int) -> Tensor:
    """(N, H, W) labels -> (N, K, H, W) masks; ignored pixels belong to no class."""
    return label_masks(labels, num_classes) & valid.unsqueeze(1)


class BoundaryIoU(LabelMetric):
    """Boundary IoU per class, averaged over the classes present.

    Cheng, Girshick, Dollar, Berg & Kirillov, "Boundary IoU: Improving Object-Centric Image
    Segmentation Evaluation", CVPR 2021. For a class with ground-truth mask G and predicted mask
    P, G_d and P_d are the pixels within distance d of the masks' contours, and

        BIoU = |(G_d ∩ G) ∩ (P_d ∩ P)| / |(G_d ∩ G) ∪ (P_d ∩ P)|.

    As in the official code (``mask_to_boundary``: the mask minus its erosion by d iterations of a
    3x3 square, after zero-padding the image by 1 px), G_d ∩ G is the mask minus its erosion, the
    distance is Chebyshev (square neighbourhood) and the image border counts as a contour.
    ``d = round(dilation_ratio * sqrt(H^2 + W^2))``, at least 1 px, unless ``dilation`` is given.

    Intersections and unions are summed per class over all pixels of all batches (and ranks);
    ``compute`` returns their ratio averaged over the classes whose union is non-empty, i.e.
    classes absent from both predictions and targets are left out (NaN if there is none).

    Void: the target's ignored pixels belong to no class (so a class next to void has a contour
    there), and they are counted in neither intersection nor union.

    Update shapes: preds (N, H, W) int labels or (N, K, H, W) logits; target (N, H, W) int.
    Cost: a few (N, K, H + 2d, W + 2d) float temporaries per update.

    Args:
        num_classes, ignore_index, validate_args: see :class:`LabelMetric`.
        dilation_ratio: d as a fraction of the image diagonal (0.02 in the paper).
        dilation: d in pixels, overriding ``dilation_ratio``.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = 255,
        dilation_ratio: float = 0.02,
        dilation: int | None = None,
        validate_args: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, ignore_index, validate_args, **kwargs)
        self.dilation_ratio = check_ratio("dilation_ratio", dilation_ratio)
        if dilation is not None and non_negative_int("dilation", dilation) == 0:
            raise ValueError("dilation must be >= 1 px (0 would make every band empty)")
        self.dilation = dilation
        self._add_count_state("intersection", num_classes)
        self._add_count_state("union", num_classes)

    def update(self, preds: Tensor, target: Tensor) -> None:
        preds, target, valid = self._prepare(preds, target)
        d = radius_from_diagonal(self.dilation, self.dilation_ratio, *target.shape[-2:], round)
        gt = inner_band(_class_masks(target, valid, self.num_classes), d, border_is_edge=True)
        pr = inner_band(label_masks(preds, self.num_classes), d, border_is_edge=True)
        counted = valid.unsqueeze(1)
        self.intersection += (gt & pr & counted).sum(dim=(0, 2, 3))
        self.union += ((gt | pr) & counted).sum(dim=(0, 2, 3))

    def compute(self) -> Tensor:
        return class_mean(self.intersection / self.union.clamp_min(1), self.union > 0)


class BoundaryFScore(LabelMetric):
    """Boundary F-measure per class (dataset-level counts), averaged over the classes present.

    The contour accuracy of Perazzi et al., "A Benchmark Dataset and Evaluation Methodology for
    Video Object Segmentation" (DAVIS), CVPR 2016, used for upsamplers' boundary quality.

    Boundary pixels of a class mask are its pixels with an 8-neighbour outside the mask (the
    1-px inner contour). Unlike Boundary IoU, the image border is not a contour here (as in the
    DAVIS ``seg2bmap``): a frame around every image would be matched for free. A predicted
    boundary pixel of class c is correct if a ground-truth boundary pixel of class c lies within
    Chebyshev distance t (square (2t+1) x (2t+1) window; DAVIS uses a disk), and symmetrically
    for recall. Per class, over all pixels of all batches (and ranks):

        P = matched predicted / predicted boundary pixels
        R = matched target / target boundary pixels,      F = 2PR / (P + R)

    with P (R) = 0 when there is no predicted (target) boundary and F = 0 when P + R = 0.
    ``compute`` averages F over the classes with any predicted or target boundary pixel (NaN if
    none). ``t = ceil(tolerance_ratio * sqrt(H^2 + W^2))``, at least 1 px (DAVIS:
    0.008), unless ``tolerance`` is given.

    Void: ignored target pixels belong to no class, and boundary pixels there are not counted;
    a predicted contour inside the void may still match a nearby target boundary (recall), since
    the true contour often lies in a void band (e.g. Pascal VOC).

    Update shapes: preds (N, H, W) int labels or (N, K, H, W) logits; target (N, H, W) int.

    Args:
        num_classes, ignore_index, validate_args: see :class:`LabelMetric`.
        tolerance: t in pixels (0 = exact match), overriding ``tolerance_ratio``.
        tolerance_ratio: t as a fraction of the image diagonal.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = 255,
        tolerance: int | None = None,
        tolerance_ratio: float = 0.008,
        validate_args: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, ignore_index, validate_args, **kwargs)
        if tolerance is not None:
            non_negative_int("tolerance", tolerance)
        self.tolerance = tolerance
        self.tolerance_ratio = check_ratio("tolerance_ratio", tolerance_ratio)
        for name in ("pred_total", "pred_matched", "target_total", "target_matched"):
            self._add_count_state(name, num_classes)

    def update(self, preds: Tensor, target: Tensor) -> None:
        preds, target, valid = self._prepare(preds, target)
        height, width = target.shape[-2:]
        t = radius_from_diagonal(self.tolerance, self.tolerance_ratio, height, width, math.ceil)
        counted = valid.unsqueeze(1)
        gt = inner_band(_class_masks(target, valid, self.num_classes), 1, border_is_edge=False)
        pr = inner_band(label_masks(preds, self.num_classes), 1, border_is_edge=False)
        near_gt = dilate(gt, t, outside=False)
        near_pr = dilate(pr, t, outside=False)
        pr = pr & counted
        self.pred_total += pr.sum(dim=(0, 2, 3))
        self.pred_matched += (pr & near_gt).sum(dim=(0, 2, 3))
        self.target_total += gt.sum(dim=(0, 2, 3))
        self.target_matched += (gt & near_pr).sum(dim=(0, 2, 3))

    def compute(self) -> Tensor:
        precision = self.pred_matched / self.pred_total.clamp_min(1)
        recall = self.target_matched / self.target_total.clamp_min(1)
        denom = precision + recall
        f = 2 * precision * recall / denom.where(denom > 0, 1.0)
        return class_mean(f, (self.pred_total + self.target_total) > 0)


register(MetricDeclaration("bIoU", BoundaryIoU, compared=True))
register(MetricDeclaration("bF", BoundaryFScore, compared=True))
