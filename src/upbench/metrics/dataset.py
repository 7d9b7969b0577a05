"""Dataset-level mIoU and pixel accuracy (torchmetrics), tracked on every split."""

from __future__ import annotations

from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from upbench.metrics.base import SPLITS, MetricDeclaration, register

# MulticlassJaccardIndex accumulates one confusion matrix over the whole split (dataset mIoU)
# and honours ignore_index, unlike torchmetrics.segmentation.MeanIoU (a per-image average).
register(
    MetricDeclaration(
        "mIoU",
        MulticlassJaccardIndex,
        {"average": "macro"},
        splits=frozenset(SPLITS),
        compared=True,
    )
)
register(
    MetricDeclaration(
        "pixel_acc", MulticlassAccuracy, {"average": "micro"}, splits=frozenset(SPLITS)
    )
)
