"""Reliability (issue 8): refusals before work starts, divergence, corrupt checkpoints, resume
after SIGTERM, never overwriting a finished run, completing a half-finished sweep."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from hydra.errors import MissingConfigException

from tests.helpers import ENV, ROOT, TINY, compose_config, tiny
from upbench.callbacks import RunWallTime
from upbench.results import read_results
from upbench.runner import train
from upbench.task import DivergenceError
from upbench.validation import ConfigError, validate_config

# (overrides, exception type, pattern the message must contain)
BAD_CONFIGS = [
    (["upsampler=bicubic_magic"], MissingConfigException, "Available options"),
    (["backbone=vgg"], MissingConfigException, "Available options"),
    (["upsampler=maxunpool", "backbone.downsample=stride"], ConfigError, "downsample=maxpool"),
    (["upsampler=maxunpool", "backbone=resnet18"], ConfigError, "downsample=maxpool"),
    (["upsampler=maxunpool", "decoder.channels=24"], ConfigError, "decoder.channels=null"),
    (["decoder.head_stride=3"], ConfigError, "head_stride=3 must be 1 or one of"),
    (["decoder.fusion=sum"], ConfigError, "decoder.fusion must be 'concat' or 'add'"),
    (["decoder.channels=[8,8]"], ConfigError, "decoder.channels has 2 entries"),
    (["optimizer.lr=-0.1"], ConfigError, "optimizer.lr must be a positive number"),
    (["trainer.max_epochs=0"], ConfigError, "trainer.max_epochs must be >= 1"),
    (["data.batch_size=0"], ConfigError, "data.batch_size must be >= 1"),
    (["trainer.accelerator=gpu"], ConfigError, "no CUDA device"),
    (["ckpt_path=/no/such/file.ckpt"], ConfigError, "does not exist"),
    (["trainer.channels_last=true"], ConfigError, "channels_last=true needs a GPU"),
    (["trainer.precision=16-mixed"], ConfigError, "fp16 mixed precision needs a GPU"),
    # A missing data folder is a refusal too (the DatasetRootError is its cause).
    (["data=voc", "data.root=/no/such/dir"], ConfigError, "VOCdevkit"),
]


@pytest.mark.parametrize(
    ("overrides", "error", "pattern"), BAD_CONFIGS, ids=[" ".join(c[0]) for c in BAD_CONFIGS]
)
def test_bad_configuration_refused_before_training(tmp_path, overrides, error, pattern):
    if torch.cuda.is_available() and ("GPU" in pattern or "CUDA" in pattern):
        pytest.skip("a GPU is present")
    # Drop the tiny-run keys of a group whose option the case swaps (their keys differ).
    swapped = tuple(o.split("=")[0] + "." for o in overrides if "." not in o.split("=")[0])
    base = [o for o in TINY if not o.startswith(swapped)] if swapped else TINY
    with pytest.raises(error, match=pattern):
        train(compose_config(tmp_path, [*base, "callbacks=default", *overrides]))
    assert not (tmp_path / "checkpoints").exists()  # no training step ran
    if (tmp_path / "results.json").exists():  # refusals after the record started are kept
        record = read_results(tmp_path)
        assert record["status"] == "failed" and record["error"]


def test_too_many_workers_warns(tmp_path):
    cfg = compose_config(tmp_path, [*TINY, "data.num_workers=512", "+trainer.fast_dev_run=true"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        validate_config(cfg)
    assert any("data.num_workers=512" in str(w.message) for w in caught)


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path):
    cfg = compose_config(
        tmp_path,
        [
            *TINY,
            "callbacks=default",
            "trainer.max_epochs=3",
            "+callbacks.poison._target_=tests.helpers.PoisonWeightsAtEpoch",
            "+callbacks.poison.epoch=1",
        ],
    )
    with pytest.raises(DivergenceError, match=r"global step \d+ .*lower optimizer.lr"):
        train(cfg)
    record = read_results(tmp_path)
    assert record["status"] == "failed" and "DivergenceError" in record["error"]
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["epoch"] == 0
    assert all(
        torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point()
    )


def test_last_checkpoint_holds_the_last_epoch_when_the_metric_stops_improving(tmp_path):
    """Lightning >= 2.5 rewrites last.ckpt only alongside a new best; ours holds every epoch's
    end, so resume and the final-weights record agree with it. Monitoring the epoch number
    with mode=min keeps the best at epoch 0, a metric that never improves."""
    overrides = [
        *tiny("callbacks=default", "trainer.max_epochs=3"),
        "callbacks.model_checkpoint.monitor=epoch",
        "callbacks.model_checkpoint.mode=min",
    ]
    train(compose_config(tmp_path, overrides))
    steps_per_epoch = 16 // 8  # data.num_train / data.batch_size of TINY
    for name, epoch in (("best", 0), ("last", 2)):
        state = torch.load(tmp_path / "checkpoints" / f"{name}.ckpt", weights_only=True)
        assert (state["epoch"], state["global_step"]) == (epoch, (epoch + 1) * steps_per_epoch)


def test_resumed_run_reports_the_wall_time_of_every_segment(tmp_path):
    """A job killed outright (SIGKILL) leaves results.json at 'running' with no time, and its
    checkpoints; resumed, its wall_time_s must add the time saved in the checkpoint it resumes
    from to the last segment's, or a multi-session sweep's cost undercounts."""
    train(compose_config(tmp_path, tiny("callbacks=default", "trainer.max_epochs=1")))
    first = read_results(tmp_path)
    last = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert 0 < RunWallTime.saved_in(checkpoint) <= first["wall_time_s"]
    # As a kill leaves it, but with a planted time that no real segment here comes near.
    (tmp_path / "results.json").write_text(json.dumps({**first, "status": "running"}))
    checkpoint["callbacks"][RunWallTime.__qualname__]["wall_time_s"] = 1e4
    torch.save(checkpoint, last)
    started = time.perf_counter()
    train(
        compose_config(tmp_path, tiny("callbacks=default", "trainer.max_epochs=2", "resume=true"))
    )
    segment = time.perf_counter() - started
    resumed = read_results(tmp_path)
    assert resumed["status"] == "finished"
    assert 1e4 < resumed["wall_time_s"] <= 1e4 + segment
    # ...and it is carried on into the new checkpoints, for a job killed twice.
    assert RunWallTime.saved_in(torch.load(last, weights_only=True)) > 1e4


def test_truncated_checkpoint_refused_and_previous_kept(tmp_path):
    train(compose_config(tmp_path, [*TINY, "callbacks=default"]))
    last = tmp_path / "checkpoints" / "last.ckpt"
    data = last.read_bytes()
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match="corrupt or truncated"):
        train(compose_config(tmp_path / "again", [*TINY, f"ckpt_path={broken}"]))
    torch.load(last, weights_only=True)  # the good one is untouched


def test_finished_run_directory_is_never_overwritten(tmp_path):
    train(compose_config(tmp_path, TINY))
    before = (tmp_path / "results.json").read_text()
    with pytest.raises(ConfigError, match="already holds a finished run"):
        train(compose_config(tmp_path, TINY))
    assert (tmp_path / "results.json").read_text() == before


def _train_cmd(run_dir, *extra):
    return [
        sys.executable, "train.py",
        "data.num_train=192", "data.num_val=16", "data.num_test=16", "data.image_size=32",
        "data.batch_size=8", "backbone.width=8", "trainer.max_epochs=3", "logger=csv",
        f"hydra.run.dir={run_dir}", *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_sigterm_then_resume_matches_uninterrupted_run(tmp_path):
    reference = tmp_path / "reference"
    subprocess.run(_train_cmd(reference), cwd=ROOT, env=ENV, check=True, capture_output=True)

    run = tmp_path / "interrupted"
    proc = subprocess.Popen(
        _train_cmd(run), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be interrupted"
    proc.send_signal(signal.SIGTERM)  # mid-epoch 2: epoch 1 is checkpointed, epoch 2 is not
    proc.wait(timeout=120)
    record = read_results(run)
    assert record["status"] == "interrupted", record
    assert (run / "checkpoints" / "interrupted.ckpt").exists()

    subprocess.run(
        _train_cmd(run, "resume=true"), cwd=ROOT, env=ENV, check=True, capture_output=True
    )
    resumed, uninterrupted = read_results(run), read_results(reference)
    assert resumed["status"] == "finished"
    assert resumed["metrics"] == uninterrupted["metrics"]
    assert resumed["best_metrics"] == uninterrupted["best_metrics"]


@pytest.mark.slow
def test_sweep_rerun_skips_finished_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable, "train.py", "-m", "upsampler=nearest,bilinear", *TINY,
        f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, env=ENV, check=True, capture_output=True)
    # Pretend job 1 crashed half-way: the rerun must redo it and leave job 0 alone.
    job0, job1 = sweep / "0", sweep / "1"
    record1 = json.loads((job1 / "results.json").read_text())
    record1["status"] = "failed"
    (job1 / "results.json").write_text(json.dumps(record1))
    stamp0 = (job0 / "results.json").stat().st_mtime_ns
    log0 = (job0 / "train.log").read_text()
    hydra_files0 = _hydra_files(job0)
    assert set(hydra_files0) == {"config.yaml", "hydra.yaml", "overrides.yaml"}
    assert yaml.safe_load(hydra_files0["overrides.yaml"])[0] == "upsampler=nearest"
    (job1 / ".hydra" / "overrides.yaml").unlink()
    rerun = subprocess.run(cmd, cwd=ROOT, env=ENV, check=True, capture_output=True, text=True)
    assert (job0 / "results.json").stat().st_mtime_ns == stamp0
    assert read_results(job1)["status"] == "finished"
    # The skip is said on the console, not appended to the log of a (committed) finished run.
    assert f"Skipping {job0}: it already holds a finished run" in rerun.stdout + rerun.stderr
    assert (job0 / "train.log").read_text() == log0
    # The job that ran again saved its configs; the skipped one's are left as they were.
    assert yaml.safe_load((job1 / ".hydra" / "overrides.yaml").read_text())[0] == (
        "upsampler=bilinear"
    )
    assert _hydra_files(job0) == hydra_files0

    # Reordered lists renumber the jobs: job 0 would now be bilinear. The rerun must refuse
    # rather than skip it as done (and then report nearest's numbers as bilinear's).
    reordered = [part.replace("nearest,bilinear", "bilinear,nearest") for part in cmd]
    refused = subprocess.run(reordered, cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert refused.returncode != 0
    assert "holds a finished run of another job (upsampler=nearest there, bilinear now)" in (
        refused.stderr + refused.stdout
    )
    assert (job0 / "results.json").stat().st_mtime_ns == stamp0

    # The same lists with another recipe (the experiment config edited, here one more epoch):
    # every job number holds a run of the old recipe, which must not be skipped as this one's.
    longer = [*cmd, "trainer.max_epochs=2"]
    refused = subprocess.run(longer, cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert refused.returncode != 0
    assert "holds a finished run of another recipe (trainer.max_epochs=1 there, 2 now)" in (
        refused.stderr + refused.stdout
    )
    assert (job0 / "results.json").stat().st_mtime_ns == stamp0
    # Where and how it ran is not its recipe: another thread count still skips job 0, and its
    # saved overrides still say how it ran (Hydra would have saved the rerun's over them).
    subprocess.run([*cmd, "num_threads=1"], cwd=ROOT, env=ENV, check=True, capture_output=True)
    assert (job0 / "results.json").stat().st_mtime_ns == stamp0
    assert _hydra_files(job0) == hydra_files0


def _hydra_files(run_dir: Path) -> dict[str, str]:
    return {path.name: path.read_text() for path in (run_dir / ".hydra").iterdir()}
