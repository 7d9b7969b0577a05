"""End-to-end: the real train.py / runner on tiny synthetic data."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import torch

from tests.helpers import ROOT, TINY, compose_config, group_options
from upbench.results import read_results
from upbench.runner import train


def test_fast_dev_run_of_default(tiny_cfg, tmp_path):
    cfg = tiny_cfg("+trainer.fast_dev_run=true")
    train(cfg)
    record = read_results(tmp_path)
    assert record["status"] == "finished"
    assert record["choices"] == {
        "backbone": "resnet",
        "upsampler": "resize_conv",
        "decoder": "unet",
        "data": "synthetic",
    }
    assert 0.0 <= record["metrics"]["test/mIoU"] <= 1.0


@pytest.mark.parametrize("upsampler", ["carafe", "dysample", "maxunpool"])
def test_bf16_mixed_precision_trains_the_custom_op_upsamplers(tiny_cfg, tmp_path, upsampler):
    overrides = ["trainer.precision=bf16-mixed", f"upsampler={upsampler}"]
    if upsampler == "maxunpool":
        overrides.append("backbone.downsample=maxpool")
    train(tiny_cfg(*overrides))
    record = read_results(tmp_path)
    assert record["status"] == "finished", record["error"]
    assert record["config"]["trainer"]["precision"] == "bf16-mixed"
    assert 0.0 <= record["metrics"]["test/mIoU"] <= 1.0
    assert record["metrics"]["test/loss"] > 0


def test_same_seed_gives_identical_metrics(tmp_path):
    first = train(compose_config(tmp_path / "a", [*TINY, "seed=3"]))
    second = train(compose_config(tmp_path / "b", [*TINY, "seed=3"]))
    first_record, second_record = read_results(tmp_path / "a"), read_results(tmp_path / "b")
    assert first == second
    assert first_record["metrics"] == second_record["metrics"]
    assert first_record["metrics"]["test/mIoU"] is not None
    train(compose_config(tmp_path / "c", [*TINY, "seed=4"]))
    assert read_results(tmp_path / "c")["metrics"] != first_record["metrics"]


@pytest.mark.slow
def test_train_py_subprocess_writes_results_and_logs(tmp_path):
    run_dir = tmp_path / "run"
    overrides = [o for o in TINY if not o.startswith(("logger=", "callbacks="))]
    proc = subprocess.run(
        [
            sys.executable,
            "train.py",
            *overrides,
            "trainer.max_epochs=2",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "finished"
    assert record["seed"] == 0
    assert record["choices"]["upsampler"] == "resize_conv"
    assert record["params"]["total"] > record["params"]["upsampler"] > 0
    assert record["wall_time_s"] > 0
    unit_interval = ["mIoU", "pixel_acc", "bIoU", "bF", "trimap_mIoU_w1", "trimap_mIoU_w8"]
    for split in ("val", "test"):
        for name in unit_interval:
            assert 0.0 <= record["metrics"][f"{split}/{name}"] <= 1.0, (split, name)
    # 8 tiny val images may hold no curve pixel (NaN -> null); the test split here has some.
    assert "val/thin_recall" in record["metrics"]
    assert 0.0 <= record["metrics"]["test/thin_recall"] <= 1.0
    assert record["metrics"]["test/loss"] > 0
    assert record["metrics"]["test/checkerboard"] > 0
    # The best-validation checkpoint was tested too, and its val score is the best seen.
    assert "test/mIoU" in record["best_metrics"]
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert (run_dir / "checkpoints" / "best.ckpt").exists()
    # CSV and offline W&B logs live in the run directory.
    with open(next((run_dir / "csv").rglob("metrics.csv"))) as f:
        rows = list(csv.DictReader(f))
    assert any(row.get("val/mIoU") for row in rows)
    assert any(row.get("val/bIoU") for row in rows)
    assert any(row.get("test/thin_recall") for row in rows)
    assert list((run_dir / "wandb").glob("offline-run-*"))
    assert "test/mIoU" in proc.stdout  # the final rich table


@pytest.mark.slow
def test_compiled_network_trains_and_keeps_plain_checkpoint_keys(tiny_cfg, tmp_path):
    train(tiny_cfg("trainer.compile=true", "callbacks=default"))
    assert read_results(tmp_path)["status"] == "finished"
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(key.startswith("model.") and "_orig_mod" not in key for key in state)


@pytest.mark.slow
@pytest.mark.parametrize("upsampler", group_options("upsampler"))
def test_every_upsampler_trains_end_to_end(tmp_path, upsampler):
    """`python train.py upsampler=NAME` for every option: the run finishes and the training loss
    goes down (max-pooling backbone, so maxunpool has its indices)."""
    cfg = compose_config(
        tmp_path,
        [*TINY, f"upsampler={upsampler}", "backbone.downsample=maxpool", "trainer.max_epochs=4",
         "data.num_train=32", "optimizer.lr=0.01"],
    )  # fmt: skip
    train(cfg)
    assert read_results(tmp_path)["status"] == "finished"
    with open(next(tmp_path.rglob("metrics.csv"))) as f:
        losses = [float(row["train/loss"]) for row in csv.DictReader(f) if row.get("train/loss")]
    assert len(losses) == 4 and losses[-1] < losses[0]
