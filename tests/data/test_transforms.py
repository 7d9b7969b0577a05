"""Joint transforms keep image and mask aligned; evaluation padding and batch collation."""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors

from upbench.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    eval_transform,
    pad_collate,
    train_transform,
)

IGNORE = 255
K = 16  # mask cell size in pixels


def coordinate_sample(height: int, width: int):
    """Image channel 0 = x, channel 1 = y (uint8); mask = (x // K) * 16 + y // K, so both the
    horizontal and the vertical position of every pixel can be read from either tensor."""
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    image = torch.stack([x, y, torch.zeros_like(x)]).to(torch.uint8)
    mask = ((x // K) * 16 + y // K).to(torch.uint8)
    return tv_tensors.Image(image), tv_tensors.Mask(mask)


def denormalise(image: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (image * std + mean) * 255


def test_random_scale_crop_flip_keep_image_and_mask_aligned():
    torch.manual_seed(0)
    transform = train_transform(crop_size=(64, 80), scale_range=(0.5, 2.0), ignore_index=IGNORE)
    flipped = padded = 0
    for _ in range(30):
        image, mask = transform(*coordinate_sample(96, 128))
        assert image.shape == (3, 64, 80) and image.dtype == torch.float32
        assert mask.shape == (64, 80)
        valid = mask != IGNORE
        # Padding (scale < 1 leaves the image smaller than the crop): ignore label, zero image.
        assert torch.all(image[:, ~valid] == 0)
        padded += int((~valid).any())
        x, y = denormalise(image)[:2]
        cell_x, cell_y = (mask // 16).double(), (mask % 16).double()
        # Bilinear (image) and nearest (mask) sampling may disagree by about one source pixel
        # at cell edges; a misaligned crop or a flip of only one tensor breaks this by >= K.
        tol = 1.5
        for coord, cell in ((x, cell_x), (y, cell_y)):
            lo, hi = cell[valid] * K - tol, (cell[valid] + 1) * K - 1 + tol
            assert torch.all((coord[valid] >= lo) & (coord[valid] <= hi))
        row = x[0][valid[0]]
        flipped += int(row.numel() > 1 and row[0] > row[-1])
    assert flipped > 0 and padded > 0  # both code paths were exercised


@pytest.mark.parametrize("mode,size,expected", [("full", None, (64, 96)), ("resize", 40, (64, 64))])
def test_eval_transform_pads_bottom_right_to_the_divisor(mode, size, expected):
    image, mask = coordinate_sample(50, 70)
    out_image, out_mask = eval_transform(mode, size, size_divisor=32, ignore_index=IGNORE)(
        image, mask
    )
    assert out_image.shape[1:] == out_mask.shape == expected
    h, w = (50, 70) if mode == "full" else (40, 56)  # shorter side 50 -> 40 keeps the aspect
    assert torch.all(out_mask[h:] == IGNORE) and torch.all(out_mask[:, w:] == IGNORE)
    assert torch.all(out_image[:, h:] == 0) and torch.all(out_image[:, :, w:] == 0)
    if mode == "full":  # untouched content at the top left
        assert torch.equal(out_mask[:h, :w], mask)
        assert torch.allclose(denormalise(out_image)[:2, :h, :w], image[:2].float(), atol=1e-3)


def test_eval_transform_rejects_bad_options():
    with pytest.raises(ValueError, match="eval_mode must be one of"):
        eval_transform("sliding", None, 32, IGNORE)
    with pytest.raises(ValueError, match="needs eval_size"):
        eval_transform("resize", None, 32, IGNORE)
    with pytest.raises(ValueError, match="scale_range"):
        train_transform(32, (2.0, 0.5), IGNORE)


def test_pad_collate_pads_to_the_largest_sample():
    samples = [
        {"image": torch.ones(3, 4, 6), "mask": torch.zeros(4, 6, dtype=torch.long)},
        {"image": torch.ones(3, 8, 2), "mask": torch.ones(8, 2, dtype=torch.long)},
    ]
    batch = pad_collate(samples, ignore_index=IGNORE)
    assert batch["image"].shape == (2, 3, 8, 6) and batch["mask"].shape == (2, 8, 6)
    assert torch.all(batch["mask"][0, 4:] == IGNORE) and torch.all(batch["mask"][0, :4] == 0)
    assert torch.all(batch["mask"][1, :, 2:] == IGNORE) and torch.all(batch["mask"][1, :, :2] == 1)
    assert batch["image"][0, :, 4:].abs().sum() == 0 and batch["image"][0, :, :4].min() == 1
