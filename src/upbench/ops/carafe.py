"""CARAFE feature reassembly in plain PyTorch, without an output-resolution unfold.

Wang et al., "CARAFE: Content-Aware ReAssembly of FEatures", ICCV 2019, Eq. (3)-(4); same
semantics as ``mmcv.ops.carafe``. For an output pixel (i, j), its source pixel is
(i // s, j // s) and

    out[n, c, i, j] = sum_{dy, dx} masks[n, g*k^2 + dy*k + dx, i, j]
                      * features[n, c, i//s + dy - k//2, j//s + dx - k//2]

with zero padding outside the map and g = c // (C / group_size).

The straightforward implementation unfolds the features to (N, C*k^2, H, W), upsamples that to
(N, C*k^2, s*H, s*W) and contracts with the masks: k^2 output-sized tensors, kept alive for
backward. Here the output is split into its s^2 sub-pixel phases (i % s, j % s): inside one
phase every output pixel of a block reads the same k x k window, so the phase is a sum of k^2
products of input-resolution tensors (a shifted view of the zero-padded features times one mask
tap). Forward and backward are written out in a custom autograd Function that saves only the
padded features and the masks, so nothing of size C*k^2 at either resolution is ever allocated.
Under ONNX export the same result comes from a short graph (:func:`_carafe_graph`), whose
largest tensors are of the input-resolution unfold's size, 1/s^2 of the naive one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from upbench.validation import positive_int


def _check_args(
    features: Tensor, masks: Tensor, kernel_size: int, group_size: int, scale_factor: int
) -> None:
    for name, value in (
        ("kernel_size", kernel_size),
        ("group_size", group_size),
        ("scale_factor", scale_factor),
    ):
        positive_int(f"carafe: {name}", value)
    if kernel_size % 2 != 1:
        raise ValueError(
            f"carafe: kernel_size must be odd so the window is centred, got {kernel_size}"
        )
    if features.dim() != 4 or masks.dim() != 4:
        raise ValueError(
            "carafe: features and masks must be 4-D (N, C, H, W), got shapes "
            f"{tuple(features.shape)} and {tuple(masks.shape)}"
        )
    n, c, h, w = features.shape
    if c % group_size:
        raise ValueError(
            f"carafe: group_size={group_size} must divide the {c} feature channels; "
            "pick a divisor of the channel count"
        )
    expected = (n, group_size * kernel_size**2, scale_factor * h, scale_factor * w)
    if tuple(masks.shape) != expected:
        raise ValueError(
            f"carafe: masks must have shape (N, group_size*k^2, s*H, s*W) = {expected} for "
            f"features {tuple(features.shape)}, got {tuple(masks.shape)}"
        )
    if masks.dtype != features.dtype or masks.device != features.device:
        raise ValueError(
            f"carafe: features ({features.dtype}, {features.device}) and masks "
            f"({masks.dtype}, {masks.device}) must share dtype and device"
        )


def _phase_masks(masks: Tensor, k2: int, groups: int, s: int) -> Tensor:
    """(N, G*k^2, s*H, s*W) -> (s, s, k^2, N, G, 1, H, W): tap t of sub-pixel phase (a, b) is a
    contiguous input-resolution map that broadcasts over the channels of its group."""
    n, _, sh, sw = masks.shape
    m = masks.reshape(n, groups, k2, sh // s, s, sw // s, s)
    return m.permute(4, 6, 2, 0, 1, 3, 5).unsqueeze(5).contiguous()


class _Carafe(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: FunctionCtx,
        features: Tensor,
        masks: Tensor,
        kernel_size: int,
        group_size: int,
        scale_factor: int,
    ) -> Tensor:
        k, s, groups = kernel_size, scale_factor, group_size
        n, c, h, w = features.shape
        pad = k // 2
        padded = F.pad(features, (pad, pad, pad, pad)).view(n, groups, c // groups, h + 2 * pad, -1)
        phase_masks = _phase_masks(masks, k * k, groups, s)
        # Phases are stored as (N, G, C/G, H, s, W, s), i.e. exactly the memory layout of the
        # (N, C, s*H, s*W) output, so the result is a free view.
        out = features.new_empty(n, groups, c // groups, h, s, w, s)
        acc = features.new_empty(n, groups, c // groups, h, w)
        for a in range(s):
            for b in range(s):
                for t in range(k * k):
                    window = padded[..., t // k : t // k + h, t % k : t % k + w]
                    if t == 0:
                        torch.mul(window, phase_masks[a, b, t], out=acc)
                    else:
                        acc.addcmul_(window, phase_masks[a, b, t])
                out[:, :, :, :, a, :, b] = acc
        ctx.save_for_backward(padded, masks)
        ctx.geometry = (k, s, groups)
        return out.view(n, c, s * h, s * w)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        padded, masks = ctx.saved_tensors
        k, s, groups = ctx.geometry
        n, _, cg, hp, wp = padded.shape
        h, w = hp - 2 * (k // 2), wp - 2 * (k // 2)
        grad_phases = grad_out.reshape(n, groups, cg, h, s, w, s)
        need_features, need_masks = ctx.needs_input_grad[:2]
        grad_padded = padded.new_zeros(padded.shape) if need_features else None
        # Gradient of the masks in the same (s, s, k^2, N, G, H, W) layout as _phase_masks.
        grad_phase_masks = masks.new_empty(s, s, k * k, n, groups, h, w) if need_masks else None
        phase_masks = _phase_masks(masks, k * k, groups, s) if need_features else None
        for a in range(s):
            for b in range(s):
                grad_phase = grad_phases[:, :, :, :, a, :, b].contiguous()
                for t in range(k * k):
                    rows, cols = slice(t // k, t // k + h), slice(t % k, t % k + w)
                    if need_features:
                        grad_padded[..., rows, cols].addcmul_(grad_phase, phase_masks[a, b, t])
                    if need_masks:
                        torch.sum(
                            grad_phase * padded[..., rows, cols],
                            dim=2,
                            out=grad_phase_masks[a, b, t],
                        )
        grad_features = None
        if need_features:
            pad = k // 2
            grad_features = grad_padded[..., pad : pad + h, pad : pad + w].reshape(n, -1, h, w)
        grad_masks = None
        if need_masks:
            # (s_a, s_b, k^2, N, G, H, W) -> (N, G, k^2, H, s_a, W, s_b) = (N, G*k^2, s*H, s*W)
            grad_masks = grad_phase_masks.permute(3, 4, 2, 5, 0, 6, 1).reshape(masks.shape)
        return grad_features, grad_masks, None, None, None


def carafe_flops(batch: int, channels: int, kernel_size: int, out_h: int, out_w: int) -> int:
    """FLOPs of :func:`carafe` (Wang et al., Eq. 3): every output value is a k x k weighted sum,
    k^2 MACs = 2 k^2 FLOPs per element of the (N, C, s*H, s*W) output. ``FlopCounterMode``
    sees none of them (the op is element-wise products), so the methods that call it declare
    them (:meth:`upbench.upsamplers.base.Upsampler.analytic_flops`)."""
    return 2 * kernel_size**2 * batch * channels * out_h * out_w


def carafe(
    features: Tensor, masks: Tensor, kernel_size: int, group_size: int, scale_factor: int
) -> Tensor:
    """Content-aware reassembly (CARAFE, Wang et al., ICCV 2019), as ``mmcv.ops.carafe``.

    Args:
        features: (N, C, H, W) feature map; C divisible by ``group_size``.
        masks: (N, group_size * k^2, s*H, s*W) reassembly kernels, already normalised (softmax
            over the k^2 taps of each group); channel g*k^2 + dy*k + dx weighs tap (dy, dx).
        kernel_size: odd reassembly kernel size k.
        group_size: number of channel groups sharing one kernel (channel c uses group
            c // (C / group_size)).
        scale_factor: integer upsampling factor s.

    Returns:
        (N, C, s*H, s*W). Differentiable w.r.t. ``features`` and ``masks`` (first order).
    """
    _check_args(features, masks, kernel_size, group_size, scale_factor)
    # The exporters cannot look inside a custom autograd.Function (and its in-place
    # accumulation would be traced with the example's sizes), so export takes the graph form.
    if torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting():
        return _carafe_graph(features, masks, kernel_size, group_size, scale_factor)
    return _Carafe.apply(features, masks, kernel_size, group_size, scale_factor)


def _carafe_graph(
    features: Tensor, masks: Tensor, kernel_size: int, group_size: int, scale_factor: int
) -> Tensor:
    """CARAFE in a few traceable ops, for the exporters (ONNX); equal to :class:`_Carafe`.

    The k^2 shifted windows of the zero-padded features are stacked at input resolution,
    (N, G, C/G, k^2, H, W): 1/s^2 of the naive (N, C*k^2, s*H, s*W) unfold. Each of the s^2
    sub-pixel phases is then one product with that phase's kernels, summed over the taps. No
    size taken from a shape enters a constant, so the graph takes any input size. (Slices rather
    than ``F.unfold``, and products rather than a batched matmul of (C/G, k^2) @ (k^2, s^2) per
    pixel: both alternatives ran 2-3x slower in ONNX Runtime on the CPU.)
    """
    k, s, groups = kernel_size, scale_factor, group_size
    n, c, h, w = features.shape
    pad = k // 2
    padded = F.pad(features, (pad, pad, pad, pad))
    windows = torch.stack(
        [padded[..., dy : dy + h, dx : dx + w] for dy in range(k) for dx in range(k)], 2
    ).reshape(n, groups, c // groups, k * k, h, w)
    kernels = masks.reshape(n, groups, 1, k * k, h, s, w, s)
    phases = [(windows * kernels[..., a, :, b]).sum(3) for a in range(s) for b in range(s)]
    # (N, G, C/G, H, W, s*s) -> (N, G, C/G, H, s, W, s) = (N, C, s*H, s*W)
    out = torch.stack(phases, -1).reshape(n, groups, c // groups, h, w, s, s)
    return out.permute(0, 1, 2, 3, 5, 4, 6).reshape(n, c, s * h, s * w)
