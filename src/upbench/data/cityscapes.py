"""Cityscapes fine annotations (Cordts et al., CVPR 2016), 19 evaluation classes.

Raw ``*_gtFine_labelIds.png`` ids (0..33) are mapped to the 19 train ids of the official
``cityscapesscripts/helpers/labels.py`` table (as shipped in ``torchvision.datasets.Cityscapes``);
every class with ``ignore_in_eval`` becomes 255. Splits: train (2,975) and val (500); test = val,
because the labels of the test set are not public.
"""

from __future__ import annotations

import numpy as np
from torchvision.datasets import Cityscapes

from upbench.data.real import RealSegmentationDataModule

LAYOUT = """\
<root>/                                   (data.root, or $UPBENCH_DATA/cityscapes)
  leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
  gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png   raw ids 0..33"""

URL = (
    "https://www.cityscapes-dataset.com/downloads/ (leftImg8bit_trainvaltest.zip and "
    "gtFine_trainvaltest.zip; free registration required)"
)

_EVAL_CLASSES = sorted(
    (c for c in Cityscapes.classes if not c.ignore_in_eval), key=lambda c: c.train_id
)
CLASS_NAMES = tuple(c.name for c in _EVAL_CLASSES)
PALETTE = [list(c.color) for c in _EVAL_CLASSES]


def train_id_lut() -> np.ndarray:
    """uint8 (256,): raw label id -> train id (0..18), 255 for every other id."""
    lut = np.full(256, 255, dtype=np.uint8)
    for c in _EVAL_CLASSES:
        lut[c.id] = c.train_id
    return lut


class CityscapesDataModule(RealSegmentationDataModule):
    """Cityscapes fine, 19 classes. Arguments: see
    :class:`upbench.data.real.RealSegmentationDataModule`."""

    subfolder = "cityscapes"
    url = URL
    layout = LAYOUT
    required = ("leftImg8bit/train/", "leftImg8bit/val/", "gtFine/train/", "gtFine/val/")
    num_classes = len(CLASS_NAMES)
    class_names = CLASS_NAMES
    palette = PALETTE
    label_lut = train_id_lut()

    def _split(self, split: str):
        data = Cityscapes(
            self.root,
            split="train" if split == "train" else "val",
            mode="fine",
            target_type="semantic",
        )
        # os.listdir order differs between file systems; sorting makes runs reproducible.
        order = sorted(range(len(data.images)), key=data.images.__getitem__)
        data.images = [data.images[i] for i in order]
        data.targets = [data.targets[i] for i in order]
        return data, [*data.images, *(t[0] for t in data.targets)]
