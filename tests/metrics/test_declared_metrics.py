"""The metric contract (upbench.metrics.base): a metric defined here, in a test module, is run by
the task on the splits it declares, with the batch entries it names, and tested by the report."""

from __future__ import annotations

import functools

import pytest
import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchmetrics import Metric

from upbench.metrics import (
    CheckerboardScore,
    MetricDeclaration,
    compared_metrics,
    declared_metrics,
    lower_is_better,
    register,
    unregister,
)
from upbench.report.table import compare_rows
from upbench.task import SegmentationTask

NUM_CLASSES = 3


class MarkedForeground(Metric):
    """Share of the pixels of a batch's ``marked`` mask that are predicted as a foreground class
    (a metric that needs a batch entry of its own, like thin_recall's ``thin``)."""

    higher_is_better = False
    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("hits", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, marked: Tensor) -> None:
        self.hits += (marked & (preds > 0)).sum()
        self.total += marked.sum()

    def compute(self) -> Tensor:
        return self.hits.double() / self.total


TOY = MetricDeclaration(
    "marked_fg",
    MarkedForeground,
    label_space=False,
    splits=frozenset({"val", "test"}),
    inputs=("preds", "marked"),
    compared=True,
)


@pytest.fixture
def toy_metric():
    register(TOY)
    yield TOY
    unregister(TOY.name)


def batches(num: int, marked: bool, size: int = 8) -> list[dict[str, Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(num):
        sample = {
            "image": torch.randn(3, size, size, generator=g),
            "mask": torch.randint(0, NUM_CLASSES, (size, size), generator=g),
        }
        if marked:
            sample["marked"] = torch.rand(size, size, generator=g) < 0.3
        out.append(sample)
    return out


def make_task() -> SegmentationTask:
    torch.manual_seed(0)
    return SegmentationTask(
        nn.Conv2d(3, NUM_CLASSES, 1),
        num_classes=NUM_CLASSES,
        optimizer=functools.partial(torch.optim.SGD, lr=0.1),
    )


def test_a_registered_metric_runs_on_its_splits_with_its_batch_entry(toy_metric):
    task = make_task()
    train, test = (
        DataLoader(batches(4, True), batch_size=2),
        DataLoader(batches(6, True), batch_size=4),
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(task, train_dataloaders=train, val_dataloaders=test)
    assert "val/marked_fg" in trainer.callback_metrics
    assert "train/marked_fg" not in trainer.callback_metrics  # not declared for training
    trainer.test(task, dataloaders=test, verbose=False)
    hits = total = 0
    with torch.no_grad():
        for batch in test:
            preds = task.model(batch["image"]).argmax(1)
            hits += int((batch["marked"] & (preds > 0)).sum())
            total += int(batch["marked"].sum())
    assert float(trainer.callback_metrics["test/marked_fg"]) == pytest.approx(hits / total)
    assert "test/mIoU" in trainer.callback_metrics  # the built-in ones still run beside it


def test_a_batch_without_the_entry_is_skipped(toy_metric):
    task = make_task()
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.test(task, dataloaders=DataLoader(batches(4, False), batch_size=2), verbose=False)
    assert "test/marked_fg" not in trainer.callback_metrics
    assert "test/mIoU" in trainer.callback_metrics


def test_the_report_compares_a_registered_metric_in_its_direction(toy_metric):
    assert "test/marked_fg" in compared_metrics()
    assert "test/marked_fg" in lower_is_better()  # from the class' higher_is_better = False

    class FakeRow:
        def __init__(self, name, values):
            self.choices = {
                "upsampler": name,
                "backbone": "resnet",
                "decoder": "unet",
                "data": "synthetic",
            }
            self.finished = [
                {"seed": s, "best_metrics": {"test/marked_fg": v, "test/mIoU": 0.5}}
                for s, v in enumerate(values)
            ]

    # b is consistently lower (better) on the toy metric, and the report says so.
    a = FakeRow("bilinear", [0.50, 0.61, 0.42, 0.55, 0.47])
    b = FakeRow("nearest", [0.40, 0.52, 0.31, 0.46, 0.36])
    family = compare_rows([a, b])
    rows = [r for r in family.rows if r.metric == "test/marked_fg"]
    assert rows and all(r.significant for r in rows)
    assert family.best["resnet/unet/synthetic", "test/marked_fg"] == "nearest"
    unregister(TOY.name)
    assert "test/marked_fg" not in compared_metrics()
    register(TOY)  # for the fixture's teardown


def test_built_in_declarations():
    by_name = {d.name: d for d in declared_metrics()}
    assert list(by_name)[:2] == ["mIoU", "pixel_acc"]  # the leading columns
    assert {d.name for d in declared_metrics("train")} == {"mIoU", "pixel_acc"}
    assert by_name["thin_recall"].batch_keys == ("mask", "thin")
    assert by_name["checkerboard"].splits == {"test"}
    assert compared_metrics() == [
        "test/mIoU",
        "test/bIoU",
        "test/bF",
        "test/checkerboard",
        "test/thin_recall",
    ]
    assert lower_is_better() == ["test/checkerboard"]


@pytest.mark.parametrize(("size", "measured"), [(8, True), (6, False), (10, True), (12, True)])
def test_checkerboard_is_skipped_where_it_cannot_measure(size, measured):
    declaration = {d.name: d for d in declared_metrics()}["checkerboard"]
    metric = declaration.build(NUM_CLASSES, 255, True)
    declaration.update(metric, {"logits": torch.randn(1, NUM_CLASSES, size, size)})
    assert metric.update_called == measured
    assert CheckerboardScore.measures(torch.zeros(1, 1, size, size), stride=2) == measured


def test_a_different_metric_under_a_taken_name_is_refused():
    with pytest.raises(ValueError, match="already registered as 'mIoU'"):
        register(MetricDeclaration("mIoU", MarkedForeground, label_space=False))


def test_the_report_shows_only_declared_fractions_in_percent():
    """The checkerboard ratio of a SegFormer head (logits resized x4) lies far below 1; it must
    not be printed as a percentage like the shares."""
    from upbench.report.table import percent_metrics

    class Row:
        finished = [
            {"best_metrics": {"test/mIoU": 0.7, "test/checkerboard": 0.008}, "metrics": {}},
            {"best_metrics": {"test/mIoU": 0.6, "test/checkerboard": 0.009}, "metrics": {}},
        ]

    assert percent_metrics([Row()], ["test/mIoU", "test/checkerboard"]) == {"test/mIoU"}
