"""Metrics that show where upsamplers differ: boundaries, thin structures, periodic artifacts.

All are :class:`torchmetrics.Metric` subclasses whose states are counts or sums reduced with
``sum`` across processes, so a DDP run gives the same value as one process over all data.
"""

from upbench.metrics.boundary import BoundaryFScore, BoundaryIoU
from upbench.metrics.checkerboard import CheckerboardScore
from upbench.metrics.thin import ThinStructureRecall
from upbench.metrics.trimap import TrimapMeanIoU

__all__ = [
    "BoundaryFScore",
    "BoundaryIoU",
    "CheckerboardScore",
    "ThinStructureRecall",
    "TrimapMeanIoU",
]
