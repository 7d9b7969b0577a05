"""Shared plumbing for every segmentation data module.

Batch contract (every dataset): a ``dict`` with
    ``image``: float32 (N, C, H, W), normalised;
    ``mask``:  int64 (N, H, W), class ids in ``[0, num_classes)`` or ``ignore_index``;
    ``thin``:  bool (N, H, W), optional, True on pixels of structures <= 3 px wide
               (only datasets that know it, e.g. ``synthetic``).

Every data module exposes ``num_classes``, ``ignore_index``, ``in_channels``, ``class_names``
and ``palette`` (``num_classes`` x 3 uint8 RGB) so that the model, metrics and prediction overlays
never need to know which dataset they run on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def colorize(labels: Tensor, palette: Tensor, ignore_index: int) -> Tensor:
    """(N, H, W) class ids -> (N, 3, H, W) uint8 colours of ``palette`` (num_classes x 3 uint8);
    ignored pixels are white."""
    colours = palette[labels.clamp(0, len(palette) - 1)]
    colours[labels == ignore_index] = 255
    return colours.permute(0, 3, 1, 2)


class SegmentationDataModule(pl.LightningDataModule):
    """Base class: subclasses set ``self.train_set``, ``self.val_set`` and ``self.test_set``
    in ``setup`` and provide the dataset metadata as attributes."""

    num_classes: int
    ignore_index: int = 255
    in_channels: int = 3
    class_names: Sequence[str]
    palette: Sequence[Sequence[int]]

    def __init__(self, batch_size: int = 16, num_workers: int = 0, pin_memory: bool = False):
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def check_num_classes(self, requested: int | None) -> None:
        """Refuse a ``data.num_classes`` override that differs from a dataset's fixed label
        space (the model is built for the dataset's count)."""
        if requested is not None and requested != self.num_classes:
            raise ValueError(
                f"data.num_classes={requested} but {type(self).__name__} has "
                f"{self.num_classes} classes: drop the override or set it to {self.num_classes}"
            )

    def _loader(self, dataset: Dataset | None, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not created this split yet")
        sampler = None
        distributed = self.trainer is not None and self.trainer.world_size > 1
        if shuffle and not distributed:
            # The order of epoch e depends only on (seed, e), not on the global RNG, so a run
            # resumed from a checkpoint sees the same batches as an uninterrupted one. Lightning
            # calls set_epoch(); under DDP it injects its own DistributedSampler the same way.
            sampler = DistributedSampler(
                dataset,
                num_replicas=1,
                rank=0,
                shuffle=True,
                seed=int(os.environ.get("PL_GLOBAL_SEED", 0)),
            )
            shuffle = False
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

    def class_frequencies(self) -> Tensor:
        """Per-class pixel frequencies of the training split, float64 (num_classes,), as median
        frequency balancing defines them (Eigen & Fergus, ICCV 2015; SegNet, Badrinarayanan et
        al., TPAMI 2017): ``freq[c] = pixels of class c / pixels of the training images that
        contain c``, ignored pixels counted nowhere; 0 for a class no training image contains.

        One pass over the training masks as the training loader yields them (augmented, where
        the dataset augments), with the global RNG restored after it: the pass must not move
        the seeded initialisation that follows it (tests/test_pairing.py)."""
        self.setup("fit")
        class_pixels = torch.zeros(self.num_classes, dtype=torch.float64)
        image_pixels = torch.zeros_like(class_pixels)
        with torch.random.fork_rng(devices=[]):
            for batch in self._loader(self.train_set, shuffle=False):
                for mask in batch["mask"]:
                    labels = mask[mask != self.ignore_index]
                    counts = torch.bincount(labels, minlength=self.num_classes).double()
                    class_pixels += counts
                    image_pixels += (counts > 0) * labels.numel()
        return class_pixels / image_pixels.clamp(min=1)

    def first_test_images(self, count: int) -> dict[str, Tensor]:
        """``{"image": (N, C, H, W), "mask": (N, H, W)}``: the first ``count`` test samples in
        test order (fewer when the test split is smaller), the rows of the prediction grid."""
        self.setup("test")
        images, masks = [], []
        for batch in self.test_dataloader():
            images.append(batch["image"])
            masks.append(batch["mask"])
            if sum(len(m) for m in masks) >= count:
                break
        return {"image": torch.cat(images)[:count], "mask": torch.cat(masks)[:count]}
