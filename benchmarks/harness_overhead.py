"""How much does the Lightning harness cost per training step, compared with a bare PyTorch loop?

Both sides train the same architecture (built from conf/ with ``upbench.runner.build_model``),
from the same initial weights, on the same batches (the data module's own train loader), with
the same optimizer (``cfg.optimizer``: AdamW), in the same process and thread count:

* Lightning: ``upbench.task.SegmentationTask`` in a ``pl.Trainer`` built from ``cfg.trainer``
  with the configured loggers and callbacks (rich progress bar, model summary) but without
  checkpointing (``enable_checkpointing=False``, the ``ModelCheckpoint`` node dropped) and
  without validation; the task also updates its training metrics and ``self.log`` values.
* bare: ``for batch in loader``: forward, cross-entropy, backward, ``optimizer.step()``,
  ``optimizer.zero_grad()``.

Method: a step's time is the interval between the starts of two consecutive batches (Lightning:
``on_train_batch_start`` of a callback; bare: the top of the loop body), so it covers
everything the loop does per step - fetching the next batch, the step itself, progress bar,
logging - and nothing of the one-off setup (trainer construction, sanity checks, model summary).
The first ``--warmup`` intervals of every fit are dropped. The sides alternate for ``--rounds``
rounds (each with a fresh copy of the initial model) so that load changes on a shared machine
hit both alike; the table reports the median over all timed steps. Under CUDA both sides
synchronise before taking a timestamp. The LR scheduler is disabled (``scheduler=null``) on
both sides, as the bare loop has none.

    python benchmarks/harness_overhead.py            # conf defaults, 64 px, batch 16
    python benchmarks/harness_overhead.py --quick    # seconds, for CI
    python benchmarks/harness_overhead.py --device cuda

Exit status 1 if the Lightning / bare ratio exceeds --max-ratio (default 1.10; checked on CPU
outside --quick, where the tiny model makes the fixed per-step cost dominate).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn

from upbench.model import build_model
from upbench.runner import NETWORK_OPTIONS
from upbench.task import SegmentationTask

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def compose_cfg(output_dir: str, overrides: list[str]) -> DictConfig:
    """conf/config.yaml as `python train.py` composes it, outputs under ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(
            "config", overrides=[*overrides, f"paths.output_dir={output_dir}", "scheduler=null"]
        )


def synchronizer(device: str) -> Callable[[], None]:
    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def network_options(cfg: DictConfig) -> dict[str, bool]:
    """``trainer.channels_last`` / ``trainer.compile``: applied to the network on both sides,
    as the runner does."""
    return {key: bool(cfg.trainer.get(key, False)) for key in NETWORK_OPTIONS}


class BatchStartTimes(pl.Callback):
    """Records a timestamp at the start of every training batch."""

    def __init__(self, sync: Callable[[], None]):
        self.sync = sync
        self.stamps: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.sync()
        self.stamps.append(time.perf_counter())


def intervals(stamps: list[float], warmup: int) -> list[float]:
    return [b - a for a, b in zip(stamps[:-1], stamps[1:], strict=True)][warmup:]


def lightning_steps(
    cfg: DictConfig, device: str, model: nn.Module, datamodule, steps: int, warmup: int
) -> list[float]:
    """Per-step seconds of ``SegmentationTask`` under a conf-built ``pl.Trainer``."""
    timer = BatchStartTimes(synchronizer(device))
    callbacks = [
        hydra.utils.instantiate(node)
        for node in (cfg.get("callbacks") or {}).values()
        if not issubclass(hydra.utils.get_class(node._target_), ModelCheckpoint)
    ]
    loggers = [hydra.utils.instantiate(node) for node in (cfg.get("logger") or {}).values()]
    task = SegmentationTask(
        model,
        num_classes=datamodule.num_classes,
        ignore_index=datamodule.ignore_index,
        optimizer=hydra.utils.instantiate(cfg.optimizer),
        class_names=datamodule.class_names,
        palette=datamodule.palette,
        **network_options(cfg),
    )
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    for key in NETWORK_OPTIONS:
        trainer_cfg.pop(key, None)
    trainer: pl.Trainer = hydra.utils.instantiate(
        trainer_cfg,
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        max_epochs=1,
        # +1: n batch starts give n - 1 intervals.
        limit_train_batches=warmup + steps + 1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        logger=loggers or False,
        callbacks=[*callbacks, timer],
    )
    trainer.fit(task, datamodule=datamodule)
    for logger in loggers:
        if hasattr(logger.experiment, "finish"):  # W&B: end the offline run
            logger.experiment.finish()
    return intervals(timer.stamps, warmup)


def bare_steps(
    cfg: DictConfig, device: str, model: nn.Module, datamodule, steps: int, warmup: int
) -> list[float]:
    """Per-step seconds of a plain PyTorch training loop over the same loader."""
    sync = synchronizer(device)
    options = network_options(cfg)
    memory_format = torch.channels_last if options["channels_last"] else torch.contiguous_format
    model = model.to(device, memory_format=memory_format).train()
    if options["compile"]:
        model.compile()
    optimizer = hydra.utils.instantiate(cfg.optimizer)(params=model.parameters())
    stamps: list[float] = []
    for batch in datamodule.train_dataloader():
        sync()
        stamps.append(time.perf_counter())
        if len(stamps) > warmup + steps:
            break
        image = batch["image"].to(device, non_blocking=True, memory_format=memory_format)
        mask = batch["mask"].to(device, non_blocking=True)
        loss = F.cross_entropy(model(image), mask, ignore_index=datamodule.ignore_index)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return intervals(stamps, warmup)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model and run, for CI")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round and side")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps at each fit's start")
    parser.add_argument("--rounds", type=int, default=5, help="alternating bare/Lightning rounds")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--max-ratio", type=float, default=1.10)
    parser.add_argument(
        "overrides",
        nargs="*",
        help="Hydra overrides of conf/, e.g. upsampler=pixelshuffle data.batch_size=32",
    )
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    # wandb+csv as in conf by default; CI runs without W&B's background service.
    overrides = ["logger=default"]
    if args.quick:
        args.steps, args.warmup, args.rounds = 4, 1, 1
        overrides = [
            "logger=csv",
            "data.image_size=32",
            "data.batch_size=4",
            "backbone.width=8",
        ]
    if args.device == "cuda":
        # conf/trainer/gpu.yaml: deterministic="warn", as some CUDA backward ops have no
        # deterministic kernel.
        overrides.append("trainer=gpu")
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_cfg(tmp, [*overrides, *args.overrides])
        batches = args.warmup + args.steps + 1
        cfg.data.num_train = batches * cfg.data.batch_size
        pl.seed_everything(cfg.seed, workers=True)
        datamodule = hydra.utils.instantiate(cfg.data)
        datamodule.setup("fit")
        initial = build_model(cfg, datamodule.num_classes)
        times: dict[str, list[float]] = {"bare": [], "lightning": []}
        for _ in range(args.rounds):
            for side, run in (("bare", bare_steps), ("lightning", lightning_steps)):
                times[side] += run(
                    cfg, args.device, copy.deepcopy(initial), datamodule, args.steps, args.warmup
                )

    median = {side: statistics.median(t) for side, t in times.items()}
    ratio = median["lightning"] / median["bare"]
    n = len(times["bare"])
    print(
        f"\nHarness overhead - {args.device}, {torch.get_num_threads()} threads, "
        f"batch {cfg.data.batch_size} x {cfg.data.image_size}px, median of {n} steps per side"
    )
    print(f"{'loop':<12}{'ms/step':>10}{'ratio':>8}")
    for side in ("bare", "lightning"):
        print(f"{side:<12}{1e3 * median[side]:>10.2f}{median[side] / median['bare']:>8.3f}")
    if args.device == "cpu" and not args.quick and ratio > args.max_ratio:
        print(f"FAIL: Lightning / bare = {ratio:.3f} > {args.max_ratio}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
