"""Axial slices of the MNI ICBM152 2009 template (Fonov et al., NeuroImage 2011), the one
real-image dataset that needs no download: nilearn ships it in its wheel.

Inputs: the T1 template (1 mm, 197 x 233 x 189, skull-stripped, intensities in [0, 1]; with
``resolution=2``, 2 mm voxels made of its 2 x 2 x 2 blocks, 98 x 116 x 94), one axial slice per
sample, anterior up, centre-padded / cropped to ``image_size`` x ``image_size``,
z-scored with the mean / std of the training slices and replicated to 3 channels so that every
backbone (built for RGB) takes it unchanged.

Labels (4 classes) derived from nilearn's tissue probability maps, which cover grey matter (GM)
and white matter (WM) but not CSF:
    background (0) where the T1 is 0 (outside the brain);
    inside the brain, argmax over (CSF, GM, WM) = (1 - p_GM - p_WM, p_GM, p_WM) -> 1, 2, 3
    (CSF is the residual probability; p_GM + p_WM <= 1 everywhere in the template).

Splits: slices whose brain area is at least ``min_brain_fraction`` of the largest slice's are
usable; ordered inferior -> superior they form contiguous blocks train | val | test
(``split_fractions``), with ``gap`` slices dropped between blocks because neighbouring 1 mm
slices are nearly identical. Never random: random slices would put near-copies of the test
images into training. The blocks cover different anatomy (test = the top of the brain), so
val/test measure generalisation to unseen levels of one brain, not to new brains.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from upbench.data.base import SegmentationDataModule
from upbench.validation import positive_int

INSTALL_HINT = "pip install 'upbench[brain]'  (installs nilearn, which ships the MNI152 template)"


class SliceDataset(Dataset):
    """Precomputed slices: ``images`` float32 (N, 3, S, S), ``masks`` int64 (N, S, S);
    ``slice_index`` (N,) the axial (z) index of each slice in the volume."""

    def __init__(self, images: Tensor, masks: Tensor, slice_index: Tensor):
        self.images = images
        self.masks = masks
        self.slice_index = slice_index

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"image": self.images[index], "mask": self.masks[index]}


def _template() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """nilearn's 1 mm (197, 233, 189) maps: T1 float32, tissue probabilities (CSF, GM, WM) float64
    stacked on axis 0, and the brain (T1 > 0). Not cached: the float64 stack is 200 MB, and only
    ``load_volumes``' small result is kept for the life of a training process."""
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=1).get_fdata(dtype=np.float32)
    # float64: near-ties between CSF and GM (p ~ 0.5) must not depend on rounding.
    gm = datasets.load_mni152_gm_template(resolution=1).get_fdata()
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata()
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    return t1, np.stack([csf, gm, wm]), t1 > 0


def _block_sum(volume: np.ndarray, factor: int) -> np.ndarray:
    """Sums over non-overlapping factor^3 blocks of the last three axes (the remainder is cut)."""
    *lead, x, y, z = volume.shape
    x, y, z = x // factor, y // factor, z // factor
    cut = volume[..., : x * factor, : y * factor, : z * factor]
    return cut.reshape(*lead, x, factor, y, factor, z, factor).sum(axis=(-5, -3, -1))


@functools.lru_cache(maxsize=2)
def load_volumes(resolution: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(t1 float32 (X, Y, Z), labels uint8 same shape) at ``resolution`` mm: (197, 233, 189) at 1,
    (98, 116, 94) at 2.

    A coarse voxel is the block of resolution^3 voxels of the 1 mm template, as a scanner with
    that voxel size would see it (partial volume): its T1 is the block's mean, it is brain when
    most of the block is, and its tissue is the argmax of the probabilities summed over the
    block's brain voxels. Block means, not nilearn's ``resolution=2`` resampling, whose
    interpolation leaves small positive T1 values far outside the brain."""
    t1, tissue_probability, brain = _template()
    if resolution > 1:
        voxels = resolution**3
        t1 = (_block_sum(t1, resolution) / voxels).astype(np.float32)
        tissue_probability = _block_sum(tissue_probability * brain, resolution)
        brain = _block_sum(brain, resolution) * 2 > voxels
    tissue = np.argmax(tissue_probability, axis=0).astype(np.uint8) + 1
    return t1, np.where(brain, tissue, 0).astype(np.uint8)


def _axial(volume: np.ndarray, size: int) -> np.ndarray:
    """(X, Y, Z) -> (Z, size, size): axial slices with anterior up, centre-padded (0) / cropped."""
    slices = np.flip(volume.transpose(2, 1, 0), axis=1)  # (Z, Y, X), row 0 = most anterior
    out = np.zeros((slices.shape[0], size, size), dtype=volume.dtype)
    src, dst = [], []
    for length in slices.shape[1:]:
        start = (length - size) // 2
        src.append(slice(max(start, 0), max(start, 0) + min(length, size)))
        dst.append(slice(max(-start, 0), max(-start, 0) + min(length, size)))
    out[:, dst[0], dst[1]] = slices[:, src[0], src[1]]
    return out


def smallest_lossless_size(labels: np.ndarray) -> int:
    """The smallest ``image_size`` whose centre crop keeps every brain voxel of ``labels``."""
    footprint = (labels > 0).any(axis=2, keepdims=True)  # (X, Y, 1): brain in any slice
    # The crop windows are nested as the size grows, and the largest side keeps everything.
    sizes = range(1, max(footprint.shape[:2]) + 1)
    return next(s for s in sizes if _axial(footprint, s).sum() == footprint.sum())


def contiguous_splits(n: int, fractions: tuple[float, float, float], gap: int) -> list[range]:
    """Three consecutive index ranges of ``range(n)`` with ``gap`` indices left out between."""
    usable = n - 2 * gap
    n_train = round(fractions[0] * usable)
    n_val = round(fractions[1] * usable)
    starts = [0, n_train + gap, n_train + n_val + 2 * gap]
    ends = [n_train, n_train + gap + n_val, n]
    return [range(s, e) for s, e in zip(starts, ends, strict=True)]


class BrainDataModule(SegmentationDataModule):
    """MNI152 axial slices, 4 classes (background, CSF, grey matter, white matter).

    Args:
        image_size: side of the square slices, a multiple of the network's output stride
            (checked like a crop size); it must keep every brain voxel: 192 and up at 1 mm,
            96 and up at 2 mm.
        resolution: voxel size in mm (``load_volumes``). 2 has 1/4 of the pixels per slice and
            half the slices of 1 mm: a cheaper table, whose thin structures are thinner in
            pixels.
        split_fractions: train / val / test shares of the usable slices (contiguous blocks).
        gap: slices dropped between neighbouring blocks.
        min_brain_fraction: a slice is usable when its brain area is at least this share of
            the largest slice's.
        num_classes: optional check (must be 4).
    """

    num_classes = 4
    class_names = ("background", "csf", "grey_matter", "white_matter")
    palette = [[0, 0, 0], [40, 120, 255], [150, 150, 150], [255, 255, 255]]

    def __init__(
        self,
        image_size: int = 192,
        resolution: int = 1,
        split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
        gap: int = 4,
        min_brain_fraction: float = 0.1,
        num_classes: int | None = None,
        batch_size: int = 16,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        try:
            import nilearn  # noqa: F401
        except ImportError as error:
            raise ImportError(f"data=brain needs nilearn: {INSTALL_HINT}") from error
        self.check_num_classes(num_classes)
        fractions = tuple(float(f) for f in split_fractions)
        if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
            raise ValueError(
                f"split_fractions must be 3 positive shares summing to 1, got {split_fractions}"
            )
        if image_size < 1 or gap < 0 or not 0 <= min_brain_fraction < 1:
            raise ValueError("need image_size >= 1, gap >= 0 and 0 <= min_brain_fraction < 1")
        self.image_size = image_size
        self.resolution = positive_int("data.resolution", resolution)
        self.crop_size = image_size  # so that validate_setup checks it against the output stride
        self.split_fractions = fractions
        self.gap = gap
        self.min_brain_fraction = min_brain_fraction

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        t1, labels = load_volumes(self.resolution)
        images = _axial(t1, self.image_size)
        masks = _axial(labels, self.image_size)
        if (masks > 0).sum() != (labels > 0).sum():
            raise ValueError(
                f"data.image_size={self.image_size} crops brain voxels off the "
                f"{t1.shape[0]} x {t1.shape[1]} slices of data.resolution={self.resolution}: "
                f"use {smallest_lossless_size(labels)} or more (a multiple of the output stride)"
            )
        area = (masks > 0).sum(axis=(1, 2))
        usable = np.flatnonzero(area >= self.min_brain_fraction * area.max())
        blocks = contiguous_splits(len(usable), self.split_fractions, self.gap)
        train_slices = images[usable[blocks[0]]]
        mean, std = float(train_slices.mean()), float(train_slices.std())
        sets = []
        for block in blocks:
            z = usable[block]
            image = torch.from_numpy((images[z] - mean) / std).unsqueeze(1).expand(-1, 3, -1, -1)
            sets.append(
                SliceDataset(
                    image.contiguous(), torch.from_numpy(masks[z]).long(), torch.from_numpy(z)
                )
            )
        self.train_set, self.val_set, self.test_set = sets
