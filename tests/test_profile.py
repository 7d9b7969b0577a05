"""The upsampler profiler: FLOP hand counts against the papers' formulas, memory estimate, CLI."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from tests.helpers import CONF_DIR
from upbench.profile import (
    BILINEAR_FLOPS,
    SOFTMAX_FLOPS,
    FlopCount,
    main,
    profile_table,
    profile_upsampler,
)
from upbench.upsamplers.base import Upsampler

N, C, H, W, S = 1, 4, 5, 6, 2
FAST = {"repeats": 1, "warmup": 0}


def conv_flops(k: int, c_in: int, c_out: int, out_h: int, out_w: int, batch: int = N) -> int:
    return 2 * k * k * c_in * c_out * out_h * out_w * batch


def test_resize_conv_is_conv_plus_bilinear_interpolation():
    result = profile_upsampler("resize_conv", (N, C, H, W), S, **FAST)
    conv = conv_flops(3, C, C, S * H, S * W)
    interp = 8 * N * C * S * H * S * W
    assert result["flops_counted"] == conv
    assert result["flops_hand"] == {"upsample_bilinear2d": interp}
    assert result["flops"] == conv + interp
    assert result["params"] == 9 * C * C + C


class CARAFE(Upsampler):
    """Minimal CARAFE (Wang et al., ICCV 2019) with the reassembly written two ways: products
    and a sum, which FlopCounterMode does not see (so the method declares them), or an einsum,
    which lowers to a bmm that it counts (so the method declares nothing)."""

    def __init__(self, channels: int, scale: int, k_up: int, k_enc: int, reassembly: str):
        super().__init__()
        self.scale, self.k_up, self.reassembly = scale, k_up, reassembly
        self.compress = nn.Conv2d(channels, 2, 1)
        self.encode = nn.Conv2d(2, scale**2 * k_up**2, k_enc, padding=k_enc // 2)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        s, k = self.scale, self.k_up
        kernels = F.softmax(F.pixel_shuffle(self.encode(self.compress(x)), s), dim=1)
        patches = F.unfold(x, k, padding=k // 2).view(n, c * k * k, h, w)
        patches = F.interpolate(patches, scale_factor=s, mode="nearest")
        patches = patches.view(n, c, k * k, s * h, s * w)
        if self.reassembly == "einsum":
            return torch.einsum("nckhw,nkhw->nchw", patches, kernels)
        return (patches * kernels.unsqueeze(1)).sum(dim=2)

    def analytic_flops(self, x_shape):
        if self.reassembly == "einsum":
            return {}
        n, c, h, w = x_shape
        return {"carafe_reassembly": 2 * self.k_up**2 * c * self.scale**2 * h * w * n}


@pytest.mark.parametrize("reassembly", ["mul_sum", "einsum"])
def test_carafe_reference_counts_encoder_softmax_and_reassembly_once(reassembly):
    k_up, k_enc = 5, 3
    module = CARAFE(C, S, k_up, k_enc, reassembly)
    x = torch.randn(N, C, H, W)
    with torch.no_grad(), FlopCount(module) as flops:
        module(x)
    convs = conv_flops(1, C, 2, H, W) + conv_flops(k_enc, 2, S * S * k_up**2, H, W)
    softmax = 5 * N * k_up**2 * S * H * S * W
    reassembly_flops = 2 * k_up**2 * C * S * H * S * W * N
    assert flops.hand["_softmax"] == softmax
    assert flops.total == convs + softmax + reassembly_flops
    if reassembly == "einsum":
        # The einsum lowers to bmm, which FlopCounterMode counts itself: no hand term on top.
        assert "carafe_reassembly" not in flops.hand
        assert flops.counted == convs + reassembly_flops
    else:
        assert flops.hand["carafe_reassembly"] == reassembly_flops
        assert flops.counted == convs


@pytest.mark.parametrize("name", ["carafe", "fade", "sapa"])
def test_reassembling_methods_add_their_declared_flops_to_the_counters(name):
    """CARAFE, FADE and SAPA: FlopCounterMode's count (their convolutions) + softmax + the k_up^2
    MACs per output element of the reassembly (+ SAPA's embedding dot products)."""
    from omegaconf import OmegaConf

    from upbench.upsamplers.base import build_upsampler

    cfg = OmegaConf.load(CONF_DIR / "upsampler" / f"{name}.yaml")
    module = build_upsampler(cfg, C, C, S, guide_channels=C)
    x, guide = torch.randn(N, C, H, W), torch.randn(N, C, S * H, S * W)
    with torch.no_grad(), FlopCounterMode(display=False) as plain:
        module(x, guide) if name != "carafe" else module(x)
    result = profile_upsampler(name, (N, C, H, W), S, **FAST)
    out_elements = N * C * S * H * S * W
    expected = {
        "carafe_reassembly": 2 * module.k_up**2 * out_elements,
        "_softmax": SOFTMAX_FLOPS * N * module.k_up**2 * S * H * S * W,
    }
    if name == "sapa":
        expected["sapa_similarity"] = 2 * cfg.embedding_dim * module.k_up**2 * N * S * H * S * W
    assert result["flops_hand"] == expected
    assert result["flops"] == plain.get_total_flops() + sum(expected.values())


class GridSampleUp(nn.Module):
    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        theta = torch.eye(2, 3).expand(n, 2, 3)
        grid = F.affine_grid(theta, (n, x.shape[1], S * H, S * W), align_corners=False)
        return F.grid_sample(x, grid, mode=self.mode, align_corners=False)


@pytest.mark.parametrize(("mode", "per_output"), [("bilinear", BILINEAR_FLOPS), ("nearest", 0)])
def test_grid_sample_hand_count(mode, per_output):
    module = GridSampleUp(mode)
    with torch.no_grad(), FlopCount(module) as flops:
        module(torch.randn(N, C, H, W))
    assert flops.total == per_output * N * C * S * H * S * W


def test_memory_estimate_counts_saved_activations_and_output():
    out_bytes = 4 * N * C * S * H * S * W
    # Interpolation saves nothing for backward: only its output.
    assert profile_upsampler("bilinear", (N, C, H, W), S, **FAST)["peak_memory_bytes"] == out_bytes
    # The conv saves its input, the (non-resident) interpolated map, besides its output.
    resize_conv = profile_upsampler("resize_conv", (N, C, H, W), S, **FAST)
    assert resize_conv["peak_memory_bytes"] == 2 * out_bytes
    assert resize_conv["latency_fwd_ms"] > 0 and resize_conv["latency_fwd_bwd_ms"] > 0


def test_maxunpool_uses_pool_indices_and_is_skipped_off_scale_two():
    at_two = profile_upsampler("maxunpool", (N, C, H, W), 2, **FAST)
    assert at_two["skipped"] is None and at_two["params"] == 0 and at_two["flops"] == 0
    at_four = profile_upsampler("maxunpool", (N, C, H, W), 4, **FAST)
    assert (
        at_four["skipped"] == "cannot be built at scale 4 (supports 2)" and at_four["flops"] is None
    )


def test_unbuildable_scale_is_skipped_with_the_reason():
    result = profile_upsampler("transposed_k2", (N, C, H, W), 4, **FAST)
    assert result["skipped"] == (
        "cannot be built at scale 4 (supports strides without holes for kernel_size=2, dilation=1)"
    )


def test_cli_positional_shape_and_names(capsys):
    results = main(["upsampler=bilinear,nearest", "1", "4", "5", "6", "2", "--repeats", "1"])
    assert [r["upsampler"] for r in results] == ["bilinear", "nearest"]
    assert all(r["shape"] == [1, 4, 5, 6] and r["scale"] == 2 for r in results)
    printed = capsys.readouterr().out
    assert "hand count in bilinear" in printed and "nearest" in printed


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["upsampler=nosuch"], "unknown upsampler nosuch: choose from bilinear, carafe"),
        (["1", "2", "3"], "give all five of N C H W SCALE, got [1, 2, 3]"),
        (["--all", "upsampler=bilinear"], "--all profiles every upsampler"),
        (["bogus"], "unexpected argument 'bogus'"),
    ],
)
def test_cli_rejects_bad_arguments(argv, message, capsys):
    """One usage error (exit 2) that names the problem, before anything is profiled."""
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--repeats", "1"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


@pytest.mark.parametrize("name", ["maxunpool", "sapa"])
def test_onnx_column_times_the_exported_module_in_onnx_runtime(name):
    """Multi-input upsamplers (indices, a guide) export too; the column is off by default."""
    pytest.importorskip("onnxruntime")
    results = main(
        [f"upsampler={name}", "--shape", str(N), "16", str(H), str(W), "--onnx", "--repeats", "1"]
    )
    for key in ("latency_ort_ms", "latency_segmenter_ms", "latency_segmenter_ort_ms"):
        assert results[0][key] > 0, key
    headers = [column.header for column in profile_table(results).columns]
    assert headers[-3:] == ["ORT fwd ms", "segmenter ms", "segmenter ORT ms"]
    plain = profile_upsampler(name, (N, 16, H, W), S, **FAST)
    assert plain["latency_ort_ms"] is None and plain["latency_segmenter_ort_ms"] is None
