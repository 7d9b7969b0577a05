"""Metrics that show where upsamplers differ: boundaries, thin structures, periodic artifacts.

All are :class:`torchmetrics.Metric` subclasses whose states are counts or sums reduced with
``sum`` across processes, so a DDP run gives the same value as one process over all data.
Every module of this package is imported here, so that the metrics it registers
(:mod:`upbench.metrics.base`) are part of every task; the dataset-level mIoU and accuracy first,
since they lead every table.
"""

import importlib
import pkgutil

from upbench.metrics import dataset  # noqa: F401  (registers first: the leading columns)
from upbench.metrics.base import (
    SPLITS,
    MetricDeclaration,
    compared_metrics,
    declared_metrics,
    lower_is_better,
    non_fractions,
    register,
    unregister,
)
from upbench.metrics.boundary import BoundaryFScore, BoundaryIoU
from upbench.metrics.checkerboard import CheckerboardScore
from upbench.metrics.thin import ThinStructureRecall
from upbench.metrics.trimap import TrimapMeanIoU

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "BoundaryFScore",
    "BoundaryIoU",
    "CheckerboardScore",
    "SPLITS",
    "MetricDeclaration",
    "ThinStructureRecall",
    "TrimapMeanIoU",
    "compared_metrics",
    "declared_metrics",
    "lower_is_better",
    "non_fractions",
    "register",
    "unregister",
]
