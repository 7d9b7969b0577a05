"""Spectral measure of the periodic (checkerboard) artifact left by a stride-s upsampler."""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from upbench.metrics.base import MetricDeclaration, register
from upbench.validation import positive_int

# The 16 frequency bins at Chebyshev distance exactly 2 from a bin. The periodic Hann window has
# only three non-zero DFT coefficients (1/2 at 0, -1/4 at +-1), so it spreads a spectral line
# over the 3x3 bins around it and never onto this ring.
_RING = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if max(abs(dy), abs(dx)) == 2]


class CheckerboardScore(Metric):
    """Peak-to-neighbourhood power ratio at the frequencies of a stride-``s`` periodic pattern.

    An upsampler of stride s whose output pixels are computed differently depending on their
    position modulo s (uneven kernel overlap of a transposed conv, untied sub-pixel filters)
    superimposes a pattern of period s on its output (Odena, Dumoulin & Olah, "Deconvolution and
    Checkerboard Artifacts", Distill 2016). In the 2-D DFT of an H x W map such a pattern only
    has energy at the artifact frequencies

        A = {(a H / s, b W / s) : a, b in 0..s-1} minus {(0, 0)}

    (the axis terms a = 0 or b = 0 and the cross terms, e.g. (H/2, W/2) for the checkerboard
    itself). Each map x = feature[n, c] has its mean removed and is multiplied by a separable
    periodic Hann window w (so the map's borders, where padding and clamping act, leak no
    energy); S = |DFT2(w x)|^2 is its power spectrum and R(f) the 16 bins at Chebyshev distance
    exactly 2 from f (indices mod H, W; the window spreads a spectral line over the 3 x 3 bins
    around it, never onto R). Summed over all maps of all batches (and ranks):

        peak = sum_{n,c} sum_{f in A} S(f),    ring = sum_{n,c} sum_{f in A} mean_{g in R(f)} S(g)

        score = peak / ring

    Floor: a spectrum without peaks at A scores about 1 (white noise: every bin has the expected
    power sigma^2 sum(w^2)). A periodic pattern of amplitude a on white noise adds
    (a HW/4)^2 / (3 * 9HW/64 sigma^2) = 4 a^2 HW / (27 sigma^2) for the stride-2 checkerboard
    (-1)^(y+x). Nearest and bilinear interpolation score below 1, because their kernels have
    spectral zeros at A. A ratio of sums (rather than a mean of per-map ratios) weights maps by
    their energy and stays finite for maps with almost no energy.

    Update shape: (N, C, H, W) float, H and W multiples of s with H/s, W/s >= 4 (so that no ring
    reaches the 3 x 3 block of DC or of another artifact frequency). The map is detached and
    transformed in float32.

    Args:
        stride: the upsampling factor s (>= 2) whose artifact is measured.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, stride: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stride = positive_int("stride", stride)
        if stride < 2:
            raise ValueError("stride must be >= 2: a stride-1 layer leaves no periodic artifact")
        for name in ("peak", "ring"):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, feature_map: Tensor) -> None:
        s = self.stride
        if feature_map.ndim != 4 or not feature_map.is_floating_point():
            raise ValueError(
                f"feature_map must be a float (N, C, H, W) tensor, got {feature_map.dtype} of "
                f"shape {tuple(feature_map.shape)}"
            )
        height, width = feature_map.shape[-2:]
        if not self.measures(feature_map, s):
            raise ValueError(
                f"H and W must be multiples of stride={s} with H/s, W/s >= 4, got {height} x "
                f"{width}; measure the upsampler output at a size that is s * (input size), "
                f"with an input of at least 4 x 4"
            )
        x = feature_map.detach().float()
        x = x - x.mean(dim=(-2, -1), keepdim=True)
        device = x.device
        window = torch.outer(
            torch.hann_window(height, periodic=True, device=device),
            torch.hann_window(width, periodic=True, device=device),
        )
        power = torch.fft.fft2(x * window).abs().square()
        rows = torch.arange(s, device=device) * (height // s)
        cols = torch.arange(s, device=device) * (width // s)
        is_artifact = torch.ones(s, s, dtype=torch.bool, device=device)
        is_artifact[0, 0] = False

        def at(dy: int, dx: int) -> Tensor:
            """Power summed over maps at the s x s grid shifted by (dy, dx): (s, s)."""
            grid = power[..., ((rows + dy) % height)[:, None], ((cols + dx) % width)[None, :]]
            return grid.sum(dim=(0, 1))

        ring = sum(at(dy, dx) for dy, dx in _RING) / len(_RING)
        self.peak += at(0, 0)[is_artifact].sum().double()
        self.ring += ring[is_artifact].sum().double()

    def compute(self) -> Tensor:
        return (self.peak / self.ring).float()

    @staticmethod
    def measures(feature_map: Tensor, stride: int) -> bool:
        """Whether a map's size can be measured: H and W multiples of ``stride``, at least
        4 periods each."""
        height, width = feature_map.shape[-2:]
        return not (height % stride or width % stride or min(height, width) // stride < 4)


# The artifact of the last x2 step, measured on the test logits (lower is better, ~1 is
# artifact-free); only maps whose size is a multiple of the stride can be measured.
TASK_STRIDE = 2
register(
    MetricDeclaration(
        "checkerboard",
        CheckerboardScore,
        {"stride": TASK_STRIDE},
        label_space=False,
        splits=frozenset({"test"}),
        inputs=("logits",),
        measurable=partial(CheckerboardScore.measures, stride=TASK_STRIDE),
        compared=True,
        fraction=False,
    )
)
