"""ONNX export: every upsampler in the default segmenter exports with dynamic shapes and runs in
ONNX Runtime with PyTorch's outputs; the CARAFE graph stays lean; the command works."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tests.helpers import ENV, ROOT, TINY, compose_config, group_options
from upbench.export import default_segmenter, export_and_verify, export_onnx, largest_intermediate
from upbench.ops.carafe import _Carafe, _carafe_graph
from upbench.upsamplers.carafe import CARAFE

pytest.importorskip("onnxruntime")


def network(upsampler: str):
    """The default segmenter (built-in ResNet, U-Net) with 2 stages instead of 4: every op
    kind of the network is there (stem, residual stages, skips, the upsampler at two levels,
    padding and cropping), at half the graph that the exporter's symbolic tracing pays for
    per node. The command's test exports the full default depth."""
    model = default_segmenter(
        upsampler, ["backbone.width=8", "backbone.num_stages=2", "data.image_size=32"]
    )
    # Trained-looking BatchNorm statistics, so that eval mode is not the identity on them.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.slow
@pytest.mark.parametrize("upsampler", group_options("upsampler"))
def test_every_upsampler_exports_and_matches_pytorch_at_two_sizes(tmp_path, upsampler):
    model = network(upsampler)
    example = torch.randn(2, 3, 32, 32)
    exported = export_and_verify(model, example, tmp_path / "model.onnx", dynamic=True)
    assert exported.exporter == "dynamo"
    # The second size is not a multiple of the output stride (4): the graph pads and crops.
    assert model.output_stride == 4
    assert exported.checked_shapes == ((2, 3, 32, 32), (3, 3, 39, 45))
    assert exported.max_abs_error <= 1e-4


def test_carafe_export_graph_equals_the_op_and_keeps_a_quarter_of_the_naive_unfold(tmp_path):
    generator = torch.Generator().manual_seed(0)
    for n, c, h, w, k, groups, s in [(2, 8, 5, 7, 5, 2, 2), (1, 6, 4, 3, 3, 3, 3)]:
        features = torch.randn(n, c, h, w, generator=generator, dtype=torch.float64)
        masks = torch.randn(n, groups * k * k, s * h, s * w, generator=generator)
        masks = masks.to(torch.float64)
        expected = _Carafe.apply(features, masks, k, groups, s)
        torch.testing.assert_close(_carafe_graph(features, masks, k, groups, s), expected)
    channels, size, scale, k_up = 16, 8, 2, 5
    module = CARAFE(channels, channels, scale, kernel_up=k_up).eval()
    path = tmp_path / "carafe.onnx"
    exported = export_onnx(module, torch.randn(1, channels, size, size), path)
    assert exported.exporter == "dynamo"
    naive = channels * k_up**2 * (scale * size) ** 2  # the (N, C*k^2, sH, sW) unfold
    _, largest = largest_intermediate(path)
    assert largest <= naive // 4


@pytest.mark.slow
def test_export_command_on_a_trained_checkpoint(tmp_path):
    from upbench.runner import train

    train(compose_config(tmp_path / "run", [o for o in TINY if o != "callbacks=none"]))
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    run = subprocess.run(
        [sys.executable, "-m", "upbench.export", f"ckpt={ckpt}", "--dynamic"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "dynamo exporter" in run.stdout and "max abs error" in run.stdout
    import onnxruntime as ort

    session = ort.InferenceSession(str(ckpt.with_suffix(".onnx")))
    (logits,) = session.run(None, {"image": torch.randn(1, 3, 40, 24).numpy()})
    assert logits.shape == (1, 4, 40, 24)
    refused = subprocess.run(
        [sys.executable, "-m", "upbench.export", "ckpt=/no/such.ckpt"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "Error: ckpt=/no/such.ckpt does not exist" in refused.stderr
