"""CUDA-only end-to-end checks, skipped on machines without a GPU (this project's CI has none):
`make test-gpu` runs them where one is present.

Every upsampler must train under ``trainer=gpu_fast`` (bf16 autocast, channels_last,
cudnn.benchmark, torch.compile) and under fp16 mixed precision with its loss scaler, the two GPU
settings the CPU tests can only approximate (CPU autocast is bf16 only, channels_last is refused
on CPU, and the CARAFE op, grid_sample and MaxUnpool have separate CUDA kernels).
"""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers import LEARNS, TINY, compose_config, group_options, train_losses
from upbench.results import read_results
from upbench.runner import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

GPU_SETTINGS = {
    "gpu_fast": ["trainer=gpu_fast"],
    "fp16": ["trainer=gpu", "trainer.precision=16-mixed"],
}


@pytest.mark.parametrize("setting", sorted(GPU_SETTINGS))
@pytest.mark.parametrize("upsampler", group_options("upsampler"))
def test_every_upsampler_trains_on_cuda(tmp_path, upsampler, setting):
    overrides = [*GPU_SETTINGS[setting], f"upsampler={upsampler}"]
    cfg = compose_config(tmp_path, [*TINY, *LEARNS, *overrides])
    train(cfg)
    record = read_results(tmp_path)
    assert record["status"] == "finished", record["error"]
    assert record["config"]["trainer"]["accelerator"] == "gpu"
    assert math.isfinite(record["metrics"]["test/loss"])
    losses = train_losses(tmp_path)
    assert len(losses) == 4 and losses[-1] < losses[0], losses
