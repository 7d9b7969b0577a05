"""Oxford-IIIT Pet (Parkhi et al., CVPR 2012) with its trimap masks.

Trimap values: 1 = pet (foreground), 2 = background, 3 = boundary / not classified. With
``boundary="class"`` (default) there are 3 classes (background 0, pet 1, boundary 2); with
``boundary="ignore"`` the boundary band is ignored (255) and 2 classes remain.

Splits: the official ``test.txt`` (3,669 images) is test; the official ``trainval.txt`` (3,680)
is split deterministically: every ``1/val_fraction``-th entry (evenly spaced over the
breed-sorted list, so every breed is represented) goes to val, the rest to train.
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Subset
from torchvision.datasets import OxfordIIITPet

from upbench.data.real import RealSegmentationDataModule

LAYOUT = """\
<root>/                                   (data.root, or $UPBENCH_DATA/pets)
  oxford-iiit-pet/
    images/<Breed_name>_<n>.jpg
    annotations/
      trainval.txt, test.txt              "<image id> <class id> <species> <breed id>" lines
      trimaps/<Breed_name>_<n>.png        values 1 = pet, 2 = background, 3 = boundary"""

URL = (
    "https://www.robots.ox.ac.uk/~vgg/data/pets/ (images.tar.gz and annotations.tar.gz, "
    "extracted into <root>/oxford-iiit-pet/)"
)

BOUNDARY_MODES = ("class", "ignore")


class PetsDataModule(RealSegmentationDataModule):
    """Oxford-IIIT Pet trimaps. ``boundary``: ``class`` (3 classes) or ``ignore`` (2 classes);
    ``val_fraction``: share of trainval held out as val. Other arguments: see
    :class:`upbench.data.real.RealSegmentationDataModule`."""

    subfolder = "pets"
    url = URL
    layout = LAYOUT
    required = (
        "oxford-iiit-pet/images/",
        "oxford-iiit-pet/annotations/trimaps/",
        "oxford-iiit-pet/annotations/trainval.txt",
        "oxford-iiit-pet/annotations/test.txt",
    )

    def __init__(self, *args, boundary: str = "class", val_fraction: float = 0.1, **kwargs):
        if boundary not in BOUNDARY_MODES:
            raise ValueError(f"boundary must be one of {BOUNDARY_MODES}, got {boundary!r}")
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.boundary = boundary
        self.val_fraction = val_fraction
        self.class_names = ("background", "pet", "boundary")[: 3 if boundary == "class" else 2]
        self.num_classes = len(self.class_names)
        self.palette = [[0, 0, 0], [220, 120, 40], [255, 255, 255]][: self.num_classes]
        self.label_lut = np.full(256, 255, dtype=np.uint8)
        self.label_lut[[1, 2]] = [1, 0]
        if boundary == "class":
            self.label_lut[3] = 2
        super().__init__(*args, **kwargs)

    def _split(self, split: str):
        data = OxfordIIITPet(
            self.root,
            split="test" if split == "test" else "trainval",
            target_types="segmentation",
            download=False,
        )
        keep = np.arange(len(data))
        if split != "test":
            keep = np.flatnonzero(val_indices(len(data), self.val_fraction) == (split == "val"))
        files = [f for i in keep for f in (data._images[i], data._segs[i])]
        return (data if split == "test" else Subset(data, keep.tolist())), files


def val_indices(n: int, fraction: float) -> np.ndarray:
    """Boolean (n,): True for ``floor(n * fraction)`` entries spread evenly over ``0..n-1``
    (entry i is in val when floor((i + 1) * fraction) > floor(i * fraction))."""
    i = np.arange(n)
    return np.floor((i + 1) * fraction) > np.floor(i * fraction)
