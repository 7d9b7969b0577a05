"""SegmentationTask's epoch values against an independent computation over the same batches."""

from __future__ import annotations

import functools

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from tests.helpers import confusion_matrix
from upbench.task import SegmentationTask

NUM_CLASSES = 3
IGNORE = 255


def batches(num_samples: int, size: int = 8) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(num_samples):
        mask = torch.randint(0, NUM_CLASSES, (size, size), generator=g)
        mask[0, :2] = IGNORE
        image = torch.randn(3, size, size, generator=g) + F.one_hot(mask.clamp(max=2), 3).permute(
            2, 0, 1
        )
        samples.append({"image": image, "mask": mask})
    return samples


@pytest.fixture
def task() -> SegmentationTask:
    torch.manual_seed(0)
    return SegmentationTask(
        nn.Conv2d(3, NUM_CLASSES, 1),
        num_classes=NUM_CLASSES,
        ignore_index=IGNORE,
        optimizer=functools.partial(torch.optim.SGD, lr=0.1),
    )


def reference(task: SegmentationTask, loader: DataLoader) -> dict[str, float]:
    """Loss: mean over samples of the per-batch mean CE (each batch weighted by its size, as
    Lightning weights epoch means). mIoU / pixel accuracy: one confusion matrix over the split."""
    losses, sizes, preds, masks = [], [], [], []
    with torch.no_grad():
        for batch in loader:
            logits = task.model(batch["image"])
            losses.append(F.cross_entropy(logits, batch["mask"], ignore_index=IGNORE))
            sizes.append(len(batch["mask"]))
            preds.append(logits.argmax(1))
            masks.append(batch["mask"])
    confusion = confusion_matrix(torch.cat(preds), torch.cat(masks), NUM_CLASSES, IGNORE)
    tp = confusion.diag().double()
    union = confusion.sum(0) + confusion.sum(1) - tp
    weights = torch.tensor(sizes, dtype=torch.double)
    return {
        "loss": float((torch.stack(losses).double() * weights).sum() / weights.sum()),
        "mIoU": float((tp / union).mean()),
        "pixel_acc": float(tp.sum() / confusion.sum()),
    }


def test_validation_epoch_values_match_an_independent_computation(task):
    # 10 samples in batches of 4: the last batch has 2, so a plain mean of batch means differs.
    loader = DataLoader(batches(10), batch_size=4)
    expected = reference(task, loader)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.validate(task, dataloaders=loader, verbose=False)
    got = {k: float(v) for k, v in trainer.callback_metrics.items()}
    for name, value in expected.items():
        assert got[f"val/{name}"] == pytest.approx(value, rel=1e-6), name
    # The loss check can only tell size-weighting from a plain mean of batch means if they differ.
    with torch.no_grad():
        batch_means = [
            float(F.cross_entropy(task.model(b["image"]), b["mask"], ignore_index=IGNORE))
            for b in loader
        ]
    assert abs(sum(batch_means) / len(batch_means) - expected["loss"]) > 1e-6


def test_train_epoch_values_are_logged_and_reset_every_epoch(task):
    loader = DataLoader(batches(8), batch_size=4)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(task, train_dataloaders=loader)
    assert {"train/loss", "train/mIoU", "train/pixel_acc"} <= set(trainer.callback_metrics)
    for metric in task.train_metrics.values():
        assert not metric.update_called  # reset at epoch end, so epoch 2 does not include epoch 1
