"""End-to-end: the real train.py / runner on tiny synthetic data."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import pytest
import torch

from tests.helpers import (
    LEARNS,
    ROOT,
    TINY,
    assert_predictions_are_the_best_checkpoints,
    compose_config,
    evaluate_config,
    group_options,
    train_losses,
)
from upbench.evaluate import evaluate
from upbench.metrics import compared_metrics
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
    # Every headline metric is recorded, with a number (the tiny test split has thin pixels).
    for key in compared_metrics():
        assert math.isfinite(record["metrics"][key]), key


@pytest.mark.parametrize("upsampler", ["carafe", "dysample", "maxunpool", "sapa"])
def test_bf16_mixed_precision_trains_the_custom_op_upsamplers(tmp_path, upsampler):
    cfg = compose_config(
        tmp_path, [*TINY, *LEARNS, "trainer.precision=bf16-mixed", f"upsampler={upsampler}"]
    )
    train(cfg)
    record = read_results(tmp_path)
    assert record["status"] == "finished", record["error"]
    assert record["config"]["trainer"]["precision"] == "bf16-mixed"
    losses = train_losses(tmp_path)
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    assert math.isfinite(record["metrics"]["test/loss"])


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
    # 8 tiny val images may hold no curve pixel (NaN -> null); the test split here has some.
    assert "val/thin_recall" in record["metrics"]
    # The recorded test metrics are those of the saved weights: the final ones (last.ckpt) and
    # the best-validation checkpoint, each evaluated again here.
    for source, ckpt in (("metrics", "last"), ("best_metrics", "best")):
        cfg = evaluate_config(tmp_path / ckpt, run_dir / "checkpoints" / f"{ckpt}.ckpt")
        again = evaluate(cfg)
        assert "test/checkerboard" in again and "test/trimap_mIoU_w8" in again
        for key, value in again.items():
            assert record[source][key] == pytest.approx(value, abs=1e-6), (source, key)
    # CSV and offline W&B logs live in the run directory.
    with open(next((run_dir / "csv").rglob("metrics.csv"))) as f:
        rows = list(csv.DictReader(f))
    assert any(row.get("val/mIoU") for row in rows)
    assert any(row.get("val/bIoU") for row in rows)
    assert any(row.get("test/thin_recall") for row in rows)
    assert list((run_dir / "wandb").glob("offline-run-*"))
    assert_predictions_are_the_best_checkpoints(run_dir)
    assert "test/mIoU" in proc.stdout  # the final rich table
    # The job's log holds Lightning's lines too (imported before Hydra set up logging, it would
    # keep them to its own console handler), each once, beside upbench's.
    log = (run_dir / "train.log").read_text()
    assert log.count("`Trainer.fit` stopped: `max_epochs=2` reached.") == 1
    assert "GPU available: False" in log
    assert (
        proc.stdout.count("`Trainer.fit` stopped") + proc.stderr.count("`Trainer.fit` stopped") == 1
    )


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
        [*TINY, *LEARNS, f"upsampler={upsampler}"],
    )
    train(cfg)
    assert read_results(tmp_path)["status"] == "finished"
    losses = train_losses(tmp_path)
    assert len(losses) == 4 and losses[-1] < losses[0], losses
