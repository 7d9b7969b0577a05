"""PASCAL VOC 2012 semantic segmentation (Everingham et al., IJCV 2010): 20 object classes +
background, 255 = "void" object borders (ignored).

Splits: train = ``train.txt`` (1,464 images) or, with ``sbd=True``, the SBD-augmented
``train_aug.txt`` (10,582 images, Hariharan et al., ICCV 2011); val = ``val.txt`` (1,449);
test = val as well, because the labels of the VOC test set are not public (so "test" numbers
are val numbers; choose checkpoints by val loss/mIoU with that in mind).
"""

from __future__ import annotations

import warnings

from torchvision.datasets import VOCSegmentation

from upbench.data.real import ListDataset, RealSegmentationDataModule, bitmap_palette, identity_lut

CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

LAYOUT = """\
<root>/                                   (data.root, or $UPBENCH_DATA/voc)
  VOCdevkit/VOC2012/
    JPEGImages/<id>.jpg
    SegmentationClass/<id>.png            palette PNGs: index = class id, 255 = void
    ImageSets/Segmentation/train.txt      one image id per line (also val.txt)
    SegmentationClassAug/<id>.png         only with sbd=true: plain 8-bit label PNGs (SBD + VOC)
    ImageSets/Segmentation/train_aug.txt  only with sbd=true: ids (or "/JPEGImages/<id>.jpg ..."
                                          lines); ids of val.txt are dropped from it"""

URL = (
    "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ (VOCtrainval_11-May-2012.tar); SBD "
    "augmented labels: https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/"
    "semantic_contours/benchmark.tgz, commonly converted to SegmentationClassAug"
)

_VOC = "VOCdevkit/VOC2012/"


class VOCDataModule(RealSegmentationDataModule):
    """PASCAL VOC 2012 (21 classes). ``sbd``: train on the SBD-augmented list. Other arguments:
    see :class:`upbench.data.real.RealSegmentationDataModule`."""

    subfolder = "voc"
    url = URL
    layout = LAYOUT
    num_classes = len(CLASS_NAMES)
    class_names = CLASS_NAMES
    palette = bitmap_palette(len(CLASS_NAMES))
    label_lut = identity_lut(len(CLASS_NAMES), 255)

    def __init__(self, *args, sbd: bool = False, **kwargs):
        self.sbd = sbd
        self.required = (
            f"{_VOC}JPEGImages/",
            f"{_VOC}SegmentationClass/",
            f"{_VOC}ImageSets/Segmentation/train.txt",
            f"{_VOC}ImageSets/Segmentation/val.txt",
        ) + (
            (f"{_VOC}SegmentationClassAug/", f"{_VOC}ImageSets/Segmentation/train_aug.txt")
            if sbd
            else ()
        )
        super().__init__(*args, **kwargs)

    def _split(self, split: str):
        if split == "train" and self.sbd:
            return self._sbd_train()
        image_set = "train" if split == "train" else "val"
        data = VOCSegmentation(self.root, year="2012", image_set=image_set, download=False)
        return data, [*data.images, *data.masks]

    def _sbd_train(self):
        voc = self.root / _VOC
        lists = voc / "ImageSets/Segmentation"
        ids = [_image_id(line) for line in (lists / "train_aug.txt").read_text().split("\n")]
        ids = [i for i in ids if i]
        val = set((lists / "val.txt").read_text().split())
        if leaked := [i for i in ids if i in val]:
            warnings.warn(
                f"voc: dropped {len(leaked)} ids of val.txt from train_aug.txt (they would leak "
                "validation images into training)",
                stacklevel=2,
            )
            ids = [i for i in ids if i not in val]
        images = [voc / "JPEGImages" / f"{i}.jpg" for i in ids]
        masks = [voc / "SegmentationClassAug" / f"{i}.png" for i in ids]
        return ListDataset(images, masks), [*images, *masks]


def _image_id(line: str) -> str:
    """``2007_000032`` from either ``2007_000032`` or ``/JPEGImages/2007_000032.jpg /Seg...png``."""
    fields = line.split()
    return fields[0].rsplit("/", 1)[-1].rsplit(".", 1)[0] if fields else ""
