"""Pixel-loop references for the metrics, written from the definitions (no tensor morphology)."""

from __future__ import annotations

import math

import torch

VOID = 255


def square_scene() -> tuple[torch.Tensor, torch.Tensor]:
    """8x8 target with a 4x4 square of class 1 (rows 2..5, cols 2..5) on class 0, and a
    prediction with the same square shifted right by one pixel (cols 3..6). Shapes (1, 8, 8)."""
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, 2:6, 2:6] = 1
    pred = torch.zeros(1, 8, 8, dtype=torch.long)
    pred[0, 2:6, 3:7] = 1
    return pred, target


def line_scene() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """8x8 target: a 1-px vertical line of class 2 (rows 1..6, col 4) on class 0; the prediction
    misses it (all class 0). Returns pred, target, thin mask (the line), each (1, 8, 8)."""
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, 1:7, 4] = 2
    return torch.zeros_like(target), target, target == 2


def random_scenes(num: int, height: int, width: int, num_classes: int, seed: int):
    """Blocky random label maps (pred, target) with some void target pixels, (num, H, W)."""
    gen = torch.Generator().manual_seed(seed)

    def blocky() -> torch.Tensor:
        coarse = torch.randint(
            num_classes, (num, 1, height // 3 + 1, width // 3 + 1), generator=gen
        )
        up = torch.nn.functional.interpolate(coarse.float(), scale_factor=3, mode="nearest")
        noise = torch.randint(num_classes, up.shape, generator=gen).float()
        flip = torch.rand(up.shape, generator=gen) < 0.1
        return up.where(~flip, noise)[:, 0, :height, :width].long()

    pred, target = blocky(), blocky()
    target[torch.rand(target.shape, generator=gen) < 0.05] = VOID
    return pred, target


def _label(img, y, x):
    h, w = len(img), len(img[0])
    return img[y][x] if 0 <= y < h and 0 <= x < w else None


def _near(img, y, x, radius, test) -> bool:
    """Does ``test(label)`` hold for some q with Chebyshev |q - (y, x)| <= radius?
    Pixels beyond the image have label None."""
    return any(
        test(_label(img, y + dy, x + dx))
        for dy in range(-radius, radius + 1)
        for dx in range(-radius, radius + 1)
    )


def band(img, c, radius, border_is_edge):
    """Set of pixels of class c within ``radius`` of a pixel not of class c."""
    h, w = len(img), len(img[0])
    return {
        (y, x)
        for y in range(h)
        for x in range(w)
        if img[y][x] == c
        and _near(
            img,
            y,
            x,
            radius,
            lambda q: (q is None and border_is_edge) or (q is not None and q != c),
        )
    }


def boundary_iou(preds, target, num_classes, d):
    inter = [0] * num_classes
    union = [0] * num_classes
    for p_img, t_img in zip(preds.tolist(), target.tolist(), strict=True):
        valid = {(y, x) for y, row in enumerate(t_img) for x, v in enumerate(row) if v != VOID}
        for c in range(num_classes):
            g, p = band(t_img, c, d, True) & valid, band(p_img, c, d, True) & valid
            inter[c] += len(g & p)
            union[c] += len(g | p)
    scores = [i / u for i, u in zip(inter, union, strict=True) if u]
    return sum(scores) / len(scores)


def boundary_f(preds, target, num_classes, t):
    counts = [[0, 0, 0, 0] for _ in range(num_classes)]  # pred, pred matched, gt, gt matched
    for p_img, t_img in zip(preds.tolist(), target.tolist(), strict=True):
        for c in range(num_classes):
            g, p = band(t_img, c, 1, False), band(p_img, c, 1, False)
            p_counted = {q for q in p if t_img[q[0]][q[1]] != VOID}
            counts[c][0] += len(p_counted)
            counts[c][1] += sum(
                any(max(abs(a - y), abs(b - x)) <= t for a, b in g) for y, x in p_counted
            )
            counts[c][2] += len(g)
            counts[c][3] += sum(any(max(abs(a - y), abs(b - x)) <= t for a, b in p) for y, x in g)
    scores = []
    for pt, pm, gt, gm in counts:
        if pt + gt:
            prec, rec = (pm / pt if pt else 0.0), (gm / gt if gt else 0.0)
            scores.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return sum(scores) / len(scores)


def trimap_miou(preds, target, num_classes, w):
    conf = [[0] * num_classes for _ in range(num_classes)]
    for p_img, t_img in zip(preds.tolist(), target.tolist(), strict=True):
        for y, row in enumerate(t_img):
            for x, v in enumerate(row):
                in_band = _near(t_img, y, x, w, lambda q, v=v: q is not None and q != v)
                if v != VOID and in_band:
                    conf[v][p_img[y][x]] += 1
    ious = []
    for c in range(num_classes):
        tp = conf[c][c]
        union = sum(conf[c]) + sum(r[c] for r in conf) - tp
        if union:
            ious.append(tp / union)
    return sum(ious) / len(ious) if ious else math.nan
