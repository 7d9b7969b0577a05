"""The metric contract: each metric declares what it reads, where it runs and how it is reported.

A metric module registers a :class:`MetricDeclaration` when it is imported, and this package
imports every module in it, so adding a metric needs its file and its test only. The task
(:class:`~upbench.task.SegmentationTask`) builds one metric per declaration for each split it
runs on and feeds it the inputs it names; the report (:mod:`upbench.report`) tests and shows the
``compared`` ones, in the direction of the metric class' ``higher_is_better``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor
from torchmetrics import Metric

SPLITS = ("train", "val", "test")
EVALUATION = frozenset({"val", "test"})
# The step's own outputs; every other input name is a key of the batch.
STEP_OUTPUTS = ("preds", "logits")


@dataclass(frozen=True)
class MetricDeclaration:
    """One metric as the task runs it and the report reads it.

    Attributes:
        name: logged as ``<split>/<name>`` (a metric whose ``compute`` returns a dict logs its
            keys instead).
        metric: the :class:`torchmetrics.Metric` class.
        options: constructor keywords besides the label space.
        label_space: the constructor takes ``num_classes``, ``ignore_index`` and
            ``validate_args`` (the dataset's; label checks run on the evaluation splits only).
        splits: where it runs, among :data:`SPLITS`.
        inputs: the arguments of ``update``, in order: ``"preds"`` (N, H, W) labels,
            ``"logits"`` (N, K, H, W), or the name of a batch entry (``"mask"``, ``"thin"``).
            A batch without one of them is skipped (the data module has no such annotation).
        measurable: whether a step's inputs can be measured (the checkerboard needs even
            sizes); ``None``: always.
        compared: a headline metric, tested pairwise between methods and shown in the summary.
        fraction: its values are shares in [0, 1], which the report shows in %; ``False`` for a
            ratio that merely happens to fall below 1 (the checkerboard score).
    """

    name: str
    metric: type[Metric]
    options: Mapping[str, Any] = field(default_factory=dict)
    label_space: bool = True
    splits: frozenset[str] = EVALUATION
    inputs: tuple[str, ...] = ("preds", "mask")
    measurable: Callable[..., bool] | None = None
    compared: bool = False
    fraction: bool = True

    def __post_init__(self) -> None:
        if not set(self.splits) <= set(SPLITS):
            raise ValueError(f"metric {self.name!r}: splits must be among {SPLITS}")

    @property
    def batch_keys(self) -> tuple[str, ...]:
        """The batch entries the metric needs beyond the step's outputs."""
        return tuple(key for key in self.inputs if key not in STEP_OUTPUTS)

    @property
    def higher_is_better(self) -> bool:
        return self.metric.higher_is_better is not False

    def build(self, num_classes: int, ignore_index: int | None, validate_args: bool) -> Metric:
        if not self.label_space:
            return self.metric(**self.options)
        return self.metric(
            num_classes=num_classes,
            ignore_index=ignore_index,
            validate_args=validate_args,
            **self.options,
        )

    def update(self, metric: Metric, available: Mapping[str, Tensor]) -> None:
        """Update ``metric`` with this step's inputs (the step's outputs and the batch), unless
        one is missing or they are not measurable."""
        if any(key not in available for key in self.inputs):
            return
        args = [available[key] for key in self.inputs]
        if self.measurable is None or self.measurable(*args):
            metric.update(*args)


_DECLARED: dict[str, MetricDeclaration] = {}


def register(declaration: MetricDeclaration) -> MetricDeclaration:
    """Make a metric part of every task built from now on."""
    if declaration.name in _DECLARED and _DECLARED[declaration.name] != declaration:
        raise ValueError(f"a different metric is already registered as {declaration.name!r}")
    _DECLARED[declaration.name] = declaration
    return declaration


def unregister(name: str) -> None:
    del _DECLARED[name]


def declared_metrics(split: str | None = None) -> list[MetricDeclaration]:
    """The registered metrics (that run on ``split``), in registration order."""
    return [d for d in _DECLARED.values() if split is None or split in d.splits]


def compared_metrics() -> list[str]:
    """Result keys of the headline metrics: ``test/<name>`` of each ``compared`` declaration."""
    return [f"test/{d.name}" for d in declared_metrics("test") if d.compared]


def non_fractions() -> set[str]:
    """Result keys (``val/<name>``, ``test/<name>``) of the metrics that are not shares."""
    return {f"{split}/{d.name}" for d in declared_metrics() if not d.fraction for split in SPLITS}


def lower_is_better() -> list[str]:
    """Result keys of the compared metrics for which smaller values are better."""
    return [
        f"test/{d.name}" for d in declared_metrics("test") if d.compared and not d.higher_is_better
    ]
