"""A refused configuration prints one message naming the key as the user typed it and what to
do, exits non-zero, and prints no traceback (python train.py as a user runs it)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import ENV, ROOT

# No data folder and no GPU, whatever the machine has.
REFUSAL_ENV = {**ENV, "UPBENCH_DATA": "", "CUDA_VISIBLE_DEVICES": ""}

BAD = [
    (["upsampler=maxunpool", "backbone.downsample=stride"], "backbone.downsample=maxpool"),
    (["backbone.width=0"], "backbone.width must be a positive integer, got 0"),
    (["upsampler=carafe", "upsampler.kernel_up=4"], "set upsampler.kernel_up to an odd size"),
    (["trainer=gpu"], "no CUDA device is visible: use trainer=default"),
    (["optimizer.lr=-1"], "optimizer.lr must be a positive number, got -1"),
    (["upsampler=fade", "backbone=resnet18"], "use decoder=segformer or decoder=fpn"),
    (["decoder=segformer", "upsampler=maxunpool"], "use decoder=unet or decoder=segnet"),
    (["decoder=fpn", "decoder.num_levels=9"], "set decoder.num_levels=4"),
    (["data=voc", "data.num_workers=0"], "set data.root=<folder> or UPBENCH_DATA"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("overrides", "message"), BAD, ids=[" ".join(o) for o, _ in BAD])
def test_refusal_is_one_message_without_traceback(tmp_path, overrides, message):
    run = subprocess.run(
        [sys.executable, "train.py", *overrides, "logger=csv", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT, env=REFUSAL_ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = run.stdout + run.stderr
    assert run.returncode == 2, output
    assert message in output
    assert "Traceback" not in output and output.count("Error: ") == 1, output
