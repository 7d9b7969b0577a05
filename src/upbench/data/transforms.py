"""Joint image + mask transforms for the real datasets (torchvision.transforms.v2).

Images are ``tv_tensors.Image`` uint8 (3, H, W) and masks ``tv_tensors.Mask`` uint8 (H, W) of
class ids / ignore; v2 dispatches on these types, so every geometric op moves both together and
masks are always resampled with nearest-neighbour interpolation (class ids never blend).

Padding happens after normalisation, with 0 for images (the ImageNet mean colour) and
``ignore_index`` for masks, so padded pixels never count in the loss or metrics. The same rule
holds in :func:`pad_collate`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_MODES = ("resize", "full")


def _pair(size: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or any(not isinstance(s, int) or s < 1 for s in pair):
        raise ValueError(f"{name} must be a positive int or [height, width], got {size!r}")
    return pair


class RandomScale(v2.Transform):
    """Resize by a factor drawn uniformly from ``scale_range`` (relative to the input size)."""

    def __init__(self, scale_range: Sequence[float]):
        super().__init__()
        low, high = scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range!r}")
        self.scale_range = (float(low), float(high))

    def make_params(self, flat_inputs: list) -> dict:
        height, width = v2.query_size(flat_inputs)
        scale = float(torch.empty(()).uniform_(*self.scale_range))
        return {"size": [max(1, round(height * scale)), max(1, round(width * scale))]}

    def transform(self, inpt, params: dict):
        return self._call_kernel(F.resize, inpt, params["size"], antialias=True)


class PadToMultiple(v2.Transform):
    """Pad bottom/right so that height and width are multiples of ``size_divisor`` (the
    network's output stride); the image content keeps its top-left position."""

    def __init__(self, size_divisor: int, ignore_index: int):
        super().__init__()
        if size_divisor < 1:
            raise ValueError(f"size_divisor must be >= 1, got {size_divisor}")
        self.size_divisor = size_divisor
        self.ignore_index = ignore_index

    def make_params(self, flat_inputs: list) -> dict:
        height, width = v2.query_size(flat_inputs)
        d = self.size_divisor
        return {"padding": [0, 0, -width % d, -height % d]}

    def transform(self, inpt, params: dict):
        fill = self.ignore_index if isinstance(inpt, tv_tensors.Mask) else 0
        return self._call_kernel(F.pad, inpt, params["padding"], fill=fill)


def _normalise() -> list[v2.Transform]:
    return [
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]


def train_transform(
    crop_size: int | Sequence[int], scale_range: Sequence[float], ignore_index: int
) -> v2.Compose:
    """Random scale -> normalise -> random crop (padding with 0 / ignore) -> horizontal flip."""
    crop = _pair(crop_size, "crop_size")
    return v2.Compose(
        [
            RandomScale(scale_range),
            *_normalise(),
            v2.RandomCrop(
                crop, pad_if_needed=True, fill={tv_tensors.Mask: ignore_index, "others": 0}
            ),
            v2.RandomHorizontalFlip(),
        ]
    )


def eval_transform(
    eval_mode: str, eval_size: int | Sequence[int] | None, size_divisor: int, ignore_index: int
) -> v2.Compose:
    """``full``: original resolution; ``resize``: shorter side to ``eval_size`` (int) or exactly
    ``eval_size`` ([height, width]). Either way padded to a multiple of ``size_divisor``.

    In ``resize`` mode the metrics are computed on the nearest-resized mask, not on the original
    annotation; ``full`` is the standard protocol."""
    if eval_mode not in EVAL_MODES:
        raise ValueError(f"eval_mode must be one of {EVAL_MODES}, got {eval_mode!r}")
    steps: list[v2.Transform] = []
    if eval_mode == "resize":
        if eval_size is None:
            raise ValueError("eval_mode=resize needs eval_size (an int shorter side or [h, w])")
        size = [eval_size] if isinstance(eval_size, int) else list(_pair(eval_size, "eval_size"))
        steps.append(v2.Resize(size, antialias=True))
    return v2.Compose([*steps, *_normalise(), PadToMultiple(size_divisor, ignore_index)])


def pad_collate(samples: list[dict], ignore_index: int = 255) -> dict[str, Tensor]:
    """Stack samples of different sizes (evaluation at full resolution): pad each to the batch's
    largest height and width, bottom/right, images with 0 and masks with ``ignore_index``."""
    height = max(s["mask"].shape[-2] for s in samples)
    width = max(s["mask"].shape[-1] for s in samples)

    def padded(tensor: Tensor, fill: int) -> Tensor:
        pad = (0, width - tensor.shape[-1], 0, height - tensor.shape[-2])
        return torch.nn.functional.pad(tensor, pad, value=fill)

    return {
        "image": torch.stack([padded(s["image"], 0) for s in samples]),
        "mask": torch.stack([padded(s["mask"], ignore_index) for s in samples]),
    }
