"""Multi-process runs of the real train.py on CPU: DDP (gloo, 2 ranks) and the submitit launcher.

The DDP tests check more than "it finishes": the test mIoU reported by a 2-rank run must equal
the mIoU of the same checkpoint evaluated on the whole test split in one process. The dataset
mIoU is a ratio of confusion-matrix sums, so this holds only if the ranks' metric *states* are
summed before the ratio is taken; averaging the two ranks' mIoU values gives a different number
(asserted too, so the comparison can tell the two apart).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import (
    ENV,
    ROOT,
    assert_predictions_are_the_best_checkpoints,
    checkpoint_network,
    confusion_matrix,
    tiny,
)

pytestmark = pytest.mark.slow

WORLD_SIZE = 2


def ddp_tiny(logger: str) -> list[str]:
    """The tests' tiny run with batches two ranks deal evenly, the checkpoints the references
    below evaluate, and per-pixel cross-entropy, so that the single-process reference can
    recompute the loss (Dice is a ratio over each batch, whose value depends on how the ranks
    deal the batches)."""
    return tiny("data.batch_size=4", "callbacks=default", "loss=ce", f"logger={logger}")


CPU_RANKS = ["trainer.accelerator=cpu", f"trainer.devices={WORLD_SIZE}"]
# conf/trainer/ddp*.yaml enable SyncBatchNorm, which DDP refuses on CPU modules ("SyncBatchNorm
# layers only work with GPU modules").
CPU_SYNC_BN = "trainer.sync_batchnorm=false"
TIMEOUT_S = 300


def run_train(tmp: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``python train.py`` with every output (including Hydra's defaults) kept under ``tmp``."""
    return subprocess.run(
        [sys.executable, "train.py", *overrides, f"paths.log_dir={tmp / 'logs'}"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


def confusion_miou(preds: torch.Tensor, masks: torch.Tensor, num_classes: int, ignore: int):
    """Dataset mIoU: one confusion matrix over all pixels, IoU = TP / (TP + FP + FN) for every
    class that occurs in the predictions or the labels, then the mean over those classes."""
    confusion = confusion_matrix(preds, masks, num_classes, ignore)
    tp = confusion.diag().double()
    union = confusion.sum(0) + confusion.sum(1) - tp
    return (tp[union > 0] / union[union > 0]).mean().item()


def single_process_test(run_dir: Path, checkpoint: str) -> dict[str, float]:
    """Evaluate ``checkpoints/<checkpoint>.ckpt`` on the whole test split in this process.

    Returns the dataset mIoU and mean loss, and ``rank_average_mIoU``: the mean of the mIoUs of
    the shards a 2-rank ``DistributedSampler(shuffle=False)`` deals (samples r, r + 2, ...)."""
    model, datamodule = checkpoint_network(run_dir, checkpoint)
    preds, masks, losses = [], [], []
    with torch.no_grad():
        for batch in datamodule.test_dataloader():
            logits = model(batch["image"])
            losses.append(
                F.cross_entropy(logits, batch["mask"], ignore_index=datamodule.ignore_index)
            )
            preds.append(logits.argmax(1))
            masks.append(batch["mask"])
    preds, masks = torch.cat(preds), torch.cat(masks)
    assert len(masks) % WORLD_SIZE == 0, "uneven shards would be padded with repeated samples"

    def miou(p: torch.Tensor, m: torch.Tensor) -> float:
        return confusion_miou(p, m, datamodule.num_classes, datamodule.ignore_index)

    shards = [miou(preds[r::WORLD_SIZE], masks[r::WORLD_SIZE]) for r in range(WORLD_SIZE)]
    return {
        "mIoU": miou(preds, masks),
        "loss": torch.stack(losses).mean().item(),
        "rank_average_mIoU": sum(shards) / WORLD_SIZE,
    }


def assert_single_finished_run(tmp: Path, proc: subprocess.CompletedProcess) -> dict:
    """Exit 0, one results.json (rank 0's), no directory of any other rank or Hydra default."""
    assert proc.returncode == 0, proc.stderr[-4000:]
    run_dir = tmp / "run"
    assert sorted(p.name for p in tmp.iterdir()) == ["run"]
    assert list(tmp.rglob("results.json")) == [run_dir / "results.json"]
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "finished", record["error"]
    assert record["error"] is None
    for key in ("val/mIoU", "val/pixel_acc", "test/mIoU", "test/pixel_acc", "test/loss"):
        assert key in record["metrics"], key
    return record


def assert_states_reduced(recorded_miou: float, reference: dict[str, float]) -> None:
    assert recorded_miou == pytest.approx(reference["mIoU"], abs=1e-6)
    # The check above can only tell a sum of states from an average of values if they differ.
    assert abs(reference["rank_average_mIoU"] - reference["mIoU"]) > 1e-5


@pytest.fixture(scope="module")
def ddp_spawn_run(tmp_path_factory):
    """conf/trainer/ddp_spawn.yaml as it is (no SyncBatchNorm) with the CSV logger, which must
    survive the second spawn (trainer.test)."""
    tmp = tmp_path_factory.mktemp("ddp_spawn")
    proc = run_train(
        tmp, "trainer=ddp_spawn", *CPU_RANKS, *ddp_tiny("csv"), f"hydra.run.dir={tmp}/run"
    )
    return tmp, proc


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    proc = run_train(
        tmp, "trainer=ddp", *CPU_RANKS, *ddp_tiny("csv"), CPU_SYNC_BN, f"hydra.run.dir={tmp}/run"
    )
    return tmp, proc


def test_ddp_spawn_two_cpu_ranks_sum_metric_states(ddp_spawn_run):
    tmp, proc = ddp_spawn_run
    record = assert_single_finished_run(tmp, proc)
    # The final test ran on rank 0's weights after fit, which last.ckpt holds.
    reference = single_process_test(tmp / "run", "last")
    assert_states_reduced(record["metrics"]["test/mIoU"], reference)


def test_ddp_subprocess_launcher_two_cpu_ranks_sum_metric_states(ddp_run):
    tmp, proc = ddp_run
    record = assert_single_finished_run(tmp, proc)
    run_dir = tmp / "run"
    # Lightning relaunches train.py for rank 1 into the same run directory with its own log.
    assert (run_dir / "train_ddp_process_1.log").is_file()
    reference = single_process_test(run_dir, "best")
    assert_states_reduced(record["best_metrics"]["test/mIoU"], reference)
    assert_states_reduced(record["metrics"]["test/mIoU"], single_process_test(run_dir, "last"))
    metrics_csv = next((run_dir / "csv").rglob("metrics.csv")).read_text()
    assert "test/mIoU" in metrics_csv.splitlines()[0]


def test_ddp_epoch_loss_is_reduced_across_ranks(ddp_run):
    tmp, proc = ddp_run
    record = assert_single_finished_run(tmp, proc)
    reference = single_process_test(tmp / "run", "best")
    assert record["best_metrics"]["test/loss"] == pytest.approx(reference["loss"], abs=1e-5)


def test_ddp_spawn_with_conf_defaults_and_csv_logger(ddp_spawn_run):
    tmp, proc = ddp_spawn_run
    record = assert_single_finished_run(tmp, proc)
    assert "test/mIoU" in record["best_metrics"]
    metrics_csv = next((tmp / "run" / "csv").rglob("metrics.csv")).read_text()
    assert "test/mIoU" in metrics_csv.splitlines()[0]
    # Written by the main process from the best checkpoint, not from its own (untrained) copy.
    assert_predictions_are_the_best_checkpoints(tmp / "run")


def test_submitit_local_launcher_runs_a_two_job_sweep(tmp_path):
    sweep_dir = tmp_path / "multirun"
    proc = run_train(
        tmp_path,
        "-m",
        "hydra/launcher=local",
        "upsampler=nearest,bilinear",
        *ddp_tiny("csv"),
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = [json.loads((sweep_dir / str(i) / "results.json").read_text()) for i in range(2)]
    assert [r["choices"]["upsampler"] for r in records] == ["nearest", "bilinear"]
    for i, record in enumerate(records):
        assert record["status"] == "finished", record["error"]
        # What the job recorded is what its checkpoint gives when evaluated here.
        reference = single_process_test(sweep_dir / str(i), "best")
        assert record["best_metrics"]["test/mIoU"] == pytest.approx(reference["mIoU"], abs=1e-6)
    # submitit ran each job in its own process: its job folders hold one result per job.
    assert len([p for p in (sweep_dir / ".submitit").iterdir() if p.name.isdigit()]) == 2
