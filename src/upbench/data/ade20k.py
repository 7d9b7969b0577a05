"""ADE20K SceneParsing / ADEChallengeData2016 (Zhou et al., CVPR 2017), 150 classes.

Annotation PNGs hold 0 = "other / unlabelled" and 1..150 = classes; 0 becomes 255 (ignored) and
k becomes k - 1. Splits: training (20,210) and validation (2,000); test = validation, because
the labels of the challenge test set are not public.
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset

from upbench.data.real import ListDataset, RealSegmentationDataModule, bitmap_palette, sorted_pairs

# Order of objectInfo150.csv (the names mmsegmentation uses: first synonym of each entry).
CLASS_NAMES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug",
    "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning",
    "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel", "pole",
    "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van",
    "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool",
    "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle",
    "lake", "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase",
    "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip

LAYOUT = """\
<root>/                                   (data.root, or $UPBENCH_DATA/ade20k)
  ADEChallengeData2016/
    images/{training,validation}/ADE_{train,val}_<n>.jpg
    annotations/{training,validation}/ADE_{train,val}_<n>.png   0 = unlabelled, 1..150 = class"""

URL = "http://sceneparsing.csail.mit.edu/ (ADEChallengeData2016.zip)"


def ade_lut() -> np.ndarray:
    """uint8 (256,): 0 -> 255 (ignore), k -> k - 1 for k in 1..150, anything else -> 255."""
    lut = np.full(256, 255, dtype=np.uint8)
    lut[1 : len(CLASS_NAMES) + 1] = np.arange(len(CLASS_NAMES))
    return lut


class ADE20KDataModule(RealSegmentationDataModule):
    """ADE20K SceneParsing, 150 classes. Arguments: see
    :class:`upbench.data.real.RealSegmentationDataModule`."""

    subfolder = "ade20k"
    url = URL
    layout = LAYOUT
    required = tuple(
        f"ADEChallengeData2016/{kind}/{split}/"
        for kind in ("images", "annotations")
        for split in ("training", "validation")
    )
    num_classes = len(CLASS_NAMES)
    class_names = CLASS_NAMES
    # The VOC bit pattern without its black entry 0: every class gets a distinct, fixed colour.
    palette = bitmap_palette(len(CLASS_NAMES) + 1)[1:]
    label_lut = ade_lut()

    def _split(self, split: str) -> tuple[Dataset, list]:
        folder = "training" if split == "train" else "validation"
        base = self.root / "ADEChallengeData2016"
        images, masks = sorted_pairs(
            base / "images" / folder, base / "annotations" / folder, ".jpg", ".png"
        )
        return ListDataset(images, masks), [*images, *masks]
