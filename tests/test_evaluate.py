"""Checkpoints reload themselves, and ``upbench.evaluate`` tests them with the training metrics."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from tests.helpers import ENV, ROOT, TINY, compose_config, evaluate_config
from upbench.evaluate import evaluate, load_task
from upbench.model import SegmentationModel
from upbench.results import read_results
from upbench.runner import train
from upbench.validation import ConfigError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run of train.py's runner with a non-default upsampler, loss and backbone width,
    so that a reload which fell back to any default would build another network."""
    out = tmp_path_factory.mktemp("run")
    overrides = [o for o in TINY if o != "callbacks=none"]
    train(compose_config(out, [*overrides, "upsampler=carafe", "loss=ce", "trainer.max_epochs=2"]))
    return out, read_results(out)


def test_checkpoint_rebuilds_the_trained_network_without_results_json(trained):
    out, record = trained
    task = load_task(out / "checkpoints" / "best.ckpt")
    assert isinstance(task.model, SegmentationModel)
    assert type(task.model.decoder.upsamplers()[0]).__name__ == "CARAFE"
    assert type(task.loss).__name__ == "SegmentationLoss" and task.loss.dice_weight == 0
    assert sum(p.numel() for p in task.model.parameters()) == record["params"]["total"]
    state = torch.load(out / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    for name, value in task.state_dict().items():
        assert torch.equal(value, state[name]), name


def test_evaluate_gives_the_training_runs_test_metrics(trained, tmp_path):
    out, record = trained
    metrics = evaluate(evaluate_config(tmp_path, out / "checkpoints" / "best.ckpt"))
    expected = {k: v for k, v in record["best_metrics"].items() if k.startswith("test/")}
    assert metrics.keys() == expected.keys() and "test/mIoU" in metrics
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-6), key
    written = read_results(tmp_path)
    assert written["status"] == "finished" and written["metrics"] == pytest.approx(metrics)
    assert written["checkpoint"] == str((out / "checkpoints" / "best.ckpt").resolve())


def test_evaluate_on_other_data_and_refusals(trained, tmp_path):
    out, _ = trained
    ckpt = out / "checkpoints" / "best.ckpt"
    # Another test split of the same label space (another data seed): other numbers, same keys.
    data = OmegaConf.create(load_task(ckpt).hparams["data"])
    data.seed = 7
    cfg = evaluate_config(tmp_path / "other", ckpt)
    cfg.data = data
    assert "test/mIoU" in evaluate(cfg)
    cfg.data.num_classes = 3
    with pytest.raises(ConfigError, match="has 3 classes but ckpt=.* was trained for 4"):
        evaluate(cfg)
    with pytest.raises(ConfigError, match="does not exist"):
        evaluate(evaluate_config(tmp_path, tmp_path / "missing.ckpt"))
    old = torch.load(ckpt, weights_only=True)
    del old["hyper_parameters"]
    torch.save(old, tmp_path / "old.ckpt")
    with pytest.raises(ConfigError, match="does not record its network"):
        evaluate(evaluate_config(tmp_path, tmp_path / "old.ckpt"))


@pytest.mark.slow
def test_evaluate_command(trained, tmp_path):
    out, record = trained
    run = subprocess.run(
        [sys.executable, "-m", "upbench.evaluate", f"ckpt={out / 'checkpoints' / 'best.ckpt'}",
         f"hydra.run.dir={tmp_path}"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert re.search(rf"test/mIoU +{record['best_metrics']['test/mIoU']:.4f}\n", run.stdout)
    assert read_results(tmp_path)["status"] == "finished"
    # The job's log holds Lightning's lines too, not only its console.
    assert "GPU available: False" in (tmp_path / "evaluate.log").read_text()
    missing = subprocess.run(
        [sys.executable, "-m", "upbench.evaluate", "ckpt=/no/such.ckpt",
         f"hydra.run.dir={tmp_path / 'missing'}"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "Error: ckpt=/no/such.ckpt does not exist" in missing.stderr
