"""Input checks, per-class masks and square morphology shared by the metrics in this package.

Morphology is done with boolean tensor ops, batched on whatever device the labels are on.
All neighbourhoods are squares: a radius ``r`` means Chebyshev distance <= r (a (2r+1) x (2r+1)
window), which is what ``r`` iterations of a 3x3 erosion/dilation give (the structuring element
of the official Boundary IoU code, ``cv2.erode`` with ``np.ones((3, 3))``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from upbench.validation import is_int, positive_int


def check_ignore_index(ignore_index: object) -> int | None:
    if ignore_index is not None and not is_int(ignore_index):
        raise ValueError(f"ignore_index must be an int or None, got {ignore_index!r}")
    return ignore_index


def radius_from_diagonal(
    fixed: int | None, ratio: float, height: int, width: int, rounding: Callable[[float], int]
) -> int:
    """``fixed`` if given, else ``rounding(ratio * sqrt(H^2 + W^2))``, at least 1 px."""
    if fixed is not None:
        return fixed
    return max(1, int(rounding(ratio * math.hypot(height, width))))


def check_ratio(name: str, ratio: object) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 0:
        raise ValueError(
            f"{name} must be a positive number (a fraction of the image diagonal), got {ratio!r}"
        )
    return float(ratio)


def prepare_labels(
    preds: Tensor,
    target: Tensor,
    num_classes: int,
    ignore_index: int | None,
    validate: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Bring a batch to ``(pred labels, target labels, valid)``, each of shape (N, H, W).

    Args:
        preds: integer labels (N, H, W), or float logits / probabilities (N, num_classes, H, W)
            that are reduced with ``argmax`` over dim 1.
        target: integer labels (N, H, W) in ``[0, num_classes)`` or ``ignore_index``.
        validate: check the label ranges (costs a device sync, like torchmetrics'
            ``validate_args``).

    Returns:
        preds and target as int64, and ``valid = target != ignore_index`` (all True if None).
    """
    if preds.is_floating_point():
        if preds.ndim != 4 or preds.shape[1] != num_classes:
            raise ValueError(
                f"float preds are taken as logits and must be (N, num_classes={num_classes}, H, "
                f"W), got shape {tuple(preds.shape)}; pass integer labels (N, H, W) otherwise"
            )
        preds = preds.argmax(dim=1)
    if preds.ndim != 3 or preds.dtype == torch.bool:
        raise ValueError(
            f"preds must be integer labels (N, H, W) or logits (N, C, H, W), got "
            f"{preds.dtype} of shape {tuple(preds.shape)}"
        )
    if target.is_floating_point() or target.dtype == torch.bool or target.ndim != 3:
        raise ValueError(
            f"target must be integer labels (N, H, W), got {target.dtype} of shape "
            f"{tuple(target.shape)}"
        )
    if preds.shape != target.shape:
        raise ValueError(
            f"preds {tuple(preds.shape)} and target {tuple(target.shape)} must have the same "
            "(N, H, W); upsample the logits to the mask size before updating the metric"
        )
    preds, target = preds.long(), target.long()
    if ignore_index is None:
        valid = torch.ones_like(target, dtype=torch.bool)
    else:
        valid = target != ignore_index
    if validate:
        if ((preds < 0) | (preds >= num_classes)).any():
            raise ValueError(f"preds contain labels outside [0, {num_classes})")
        if (((target < 0) | (target >= num_classes)) & valid).any():
            raise ValueError(
                f"target contains labels outside [0, {num_classes}) that are not "
                f"ignore_index={ignore_index}; set ignore_index to the dataset's void label"
            )
    return preds, target, valid


def label_masks(labels: Tensor, num_labels: int) -> Tensor:
    """One boolean mask per label: (N, H, W) -> (N, num_labels, H, W); other values match none."""
    ids = torch.arange(num_labels, device=labels.device).view(1, -1, 1, 1)
    return labels.unsqueeze(1) == ids


def _dilate_along(mask: Tensor, radius: int, dim: int, outside: bool) -> Tensor:
    """OR over a window of 2r+1 pixels centred on each pixel along ``dim``.

    Van Herk-style doubling: after k steps ``run[i]`` is the OR of the ``span = 2^k`` pixels
    from i on, so a window of any length L needs log2(L) + 1 ORs of shifted views instead of L.
    """
    dim %= mask.ndim
    size = 2 * radius + 1
    border = mask.new_full(mask.shape[:dim] + (radius,) + mask.shape[dim + 1 :], outside)
    run = torch.cat([border, mask, border], dim=dim)
    span = 1
    while 2 * span <= size:
        length = run.shape[dim] - span
        run = run.narrow(dim, 0, length) | run.narrow(dim, span, length)
        span *= 2
    # [i, i + span) and [i + size - span, i + size) overlap and together cover the window.
    n = mask.shape[dim]
    return run.narrow(dim, 0, n) | run.narrow(dim, size - span, n)


def dilate(mask: Tensor, radius: int, outside: bool) -> Tensor:
    """Dilate a bool mask (N, C, H, W) by a (2r+1) x (2r+1) square.

    ``outside`` is the value assumed for pixels beyond the image border. The square is done as
    a window over columns, then over rows (separable), each in O(log r) boolean ORs.
    """
    if radius == 0:
        return mask
    return _dilate_along(_dilate_along(mask, radius, -2, outside), radius, -1, outside)


def inner_band(mask: Tensor, radius: int, border_is_edge: bool) -> Tensor:
    """Pixels of ``mask`` (N, C, H, W) within Chebyshev distance ``radius`` of a pixel outside it.

    Equals ``mask - erode(mask, radius)``. With ``border_is_edge`` the area beyond the image
    counts as outside the mask, so a mask cut by the image border has a band along it.
    """
    return mask & dilate(~mask, radius, outside=border_is_edge)


def class_mean(values: Tensor, present: Tensor) -> Tensor:
    """Mean of the per-class ``values`` (K,) over the classes where ``present``; NaN if none."""
    return values[present].double().mean().float()


class LabelMetric(Metric):
    """Base of the label-map metrics: holds the label space and prepares each batch.

    Args:
        num_classes: number of classes K.
        ignore_index: void label of the target (counted nowhere), or None.
        validate_args: check label ranges on every update (one device sync per batch).
        kwargs: passed to :class:`torchmetrics.Metric` (e.g. ``sync_on_compute``).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = 255,
        validate_args: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_classes = positive_int("num_classes", num_classes)
        self.ignore_index = check_ignore_index(ignore_index)
        self.validate_args = validate_args

    def _prepare(self, preds: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return prepare_labels(
            preds, target, self.num_classes, self.ignore_index, self.validate_args
        )

    def _add_count_state(self, name: str, *shape: int) -> None:
        # Counts are summed across ranks (never averaged), so DDP equals one process over all.
        self.add_state(name, torch.zeros(shape, dtype=torch.long), dist_reduce_fx="sum")
