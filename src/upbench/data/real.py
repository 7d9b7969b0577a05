"""Shared machinery of the on-disk datasets (VOC, Oxford-IIIT Pet, Cityscapes, ADE20K).

A subclass declares where its data lives (``subfolder``, ``layout``, ``required``, ``url``), its
label mapping (``label_lut``: raw PNG value -> class id or ignore) and how to open a split
(:meth:`RealSegmentationDataModule._split`); this class checks the folder at construction time,
so a Hydra ``instantiate`` of a missing dataset fails before the model is even built, and applies
the joint transforms of :mod:`upbench.data.transforms`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from upbench.data.base import SegmentationDataModule
from upbench.data.roots import require_files, require_layout, resolve_root
from upbench.data.transforms import eval_transform, pad_collate, train_transform

SPLITS = ("train", "val", "test")


def bitmap_palette(n: int) -> list[list[int]]:
    """The PASCAL VOC colour map (bits of the class id spread over R, G, B, high bits first):
    0 -> black, 1 -> (128, 0, 0), 2 -> (0, 128, 0), 3 -> (128, 128, 0), ...; defined for any n."""
    palette = []
    for index in range(n):
        rgb = [0, 0, 0]
        value = index
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        palette.append(rgb)
    return palette


def identity_lut(num_classes: int, ignore_index: int) -> np.ndarray:
    """Raw values 0..num_classes-1 kept, everything else -> ignore (uint8, 256 entries)."""
    lut = np.full(256, ignore_index, dtype=np.uint8)
    lut[:num_classes] = np.arange(num_classes)
    return lut


class ListDataset(Dataset):
    """(PIL image, PIL mask) pairs from two equally long lists of files."""

    def __init__(self, images: Sequence[str | os.PathLike], masks: Sequence[str | os.PathLike]):
        if len(images) != len(masks):
            raise ValueError(f"{len(images)} images but {len(masks)} masks")
        self.images = list(images)
        self.masks = list(masks)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Image.Image, Image.Image]:
        return Image.open(self.images[index]).convert("RGB"), Image.open(self.masks[index])


class SegmentationPairs(Dataset):
    """Wraps a dataset of (PIL image, PIL mask) into the batch contract of
    :mod:`upbench.data.base`: ``{"image": float32 (3, H, W), "mask": int64 (H, W)}``.

    The raw mask values go through ``label_lut`` (uint8 lookup table, 256 entries) before the
    joint ``transform``."""

    def __init__(self, pairs: Dataset, label_lut: np.ndarray, transform: v2.Transform):
        self.pairs = pairs
        self.label_lut = label_lut
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, mask = self.pairs[index]
        raw = np.asarray(mask)
        if raw.ndim != 2:
            raise ValueError(
                f"mask {index} has shape {raw.shape}: expected a single-channel label PNG "
                "(palette or greyscale), not a colour rendering"
            )
        image = tv_tensors.Image(F.pil_to_tensor(image))  # every source opens it as RGB
        mask = tv_tensors.Mask(torch.from_numpy(self.label_lut[raw]))
        image, mask = self.transform(image, mask)
        return {
            "image": image.as_subclass(torch.Tensor),
            "mask": mask.as_subclass(torch.Tensor).long(),
        }


class RealSegmentationDataModule(SegmentationDataModule):
    """Base of the on-disk datasets.

    Args:
        root: the dataset folder; ``None`` -> ``$UPBENCH_DATA/<subfolder>``.
        crop_size: training crop, int or [height, width]; must be a multiple of the network's
            output stride (checked by :func:`upbench.validation.validate_setup`). The synthetic
            dataset's ``image_size`` has no counterpart here: real images keep their own size.
        scale_range: training images are resized by a factor drawn uniformly from this range.
        eval_mode: ``full`` (original resolution, the standard protocol) or ``resize``.
        eval_size: ``resize`` mode only: shorter side (int) or exact [height, width].
        size_divisor: evaluation images are padded (mask with ignore) to a multiple of it.
        num_classes: optional check against the dataset's fixed number of classes.
    """

    subfolder: str
    url: str
    layout: str
    required: tuple[str, ...]
    label_lut: np.ndarray

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        crop_size: int | Sequence[int] = 512,
        scale_range: Sequence[float] = (0.5, 2.0),
        eval_mode: str = "full",
        eval_size: int | Sequence[int] | None = None,
        size_divisor: int = 32,
        num_classes: int | None = None,
        batch_size: int = 16,
        num_workers: int = 4,
        pin_memory: bool = False,
    ):
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        self.check_num_classes(num_classes)
        self.crop_size = list(crop_size) if not isinstance(crop_size, int) else crop_size
        self.train_transform = train_transform(crop_size, scale_range, self.ignore_index)
        self.eval_transform = eval_transform(eval_mode, eval_size, size_divisor, self.ignore_index)
        self.root = resolve_root(root, self.subfolder, self.layout, self.url)
        require_layout(self.root, self.required, self.subfolder, self.layout, self.url)

    def _split(self, split: str) -> tuple[Dataset, list[str | os.PathLike]]:
        """The (PIL image, PIL mask) dataset of ``split`` and every file it will read."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        sets = {}
        for split in SPLITS:
            pairs, files = self._split(split)
            if len(pairs) == 0:
                raise ValueError(f"{self.subfolder}: split {split!r} under {self.root} is empty")
            require_files(files, self.subfolder, self.root, self.layout, self.url)
            transform = self.train_transform if split == "train" else self.eval_transform
            sets[split] = SegmentationPairs(pairs, self.label_lut, transform)
        self.train_set, self.val_set, self.test_set = sets["train"], sets["val"], sets["test"]

    def _loader(self, dataset: Dataset | None, shuffle: bool) -> DataLoader:
        loader = super()._loader(dataset, shuffle)
        # Evaluation images differ in size (and random crops never do), so batches are padded
        # to their largest member; Lightning keeps collate_fn when it re-creates the loader.
        loader.collate_fn = partial(pad_collate, ignore_index=self.ignore_index)
        return loader


def sorted_pairs(image_dir: Path, mask_dir: Path, image_suffix: str, mask_suffix: str):
    """Images of ``image_dir`` in name order and the mask of the same stem in ``mask_dir``."""
    images = sorted(image_dir.glob(f"*{image_suffix}"))
    masks = [mask_dir / (p.name[: -len(image_suffix)] + mask_suffix) for p in images]
    return images, masks
