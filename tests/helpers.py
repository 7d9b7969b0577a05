"""Helpers shared by the tests: the project root and the tiny-run config composer."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from upbench.model import build_model
from upbench.results import PREDICTED_IMAGES, read_predictions

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
# Environment of the tests that run train.py or a benchmark as a subprocess: W&B offline, quiet;
# one OpenMP thread under pytest-xdist, whose workers already occupy every core (oversubscribed
# OpenMP threads spin and slow everything down).
ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
if os.environ.get("PYTEST_XDIST_WORKER"):
    ENV["OMP_NUM_THREADS"] = "1"

# Small enough that a whole fit + test takes seconds on 2 CPU cores.
TINY = [
    "data.num_train=16",
    "data.num_val=8",
    "data.num_test=8",
    "data.image_size=32",
    "data.batch_size=8",
    "data.num_workers=0",
    "backbone.width=8",
    "trainer.max_epochs=1",
    "logger=csv",
    "callbacks=none",
]

# With TINY: long enough for the training loss to fall for every upsampler (4 epochs of 32
# images), with a max-pooling backbone so that maxunpool has its indices.
LEARNS = [
    "trainer.max_epochs=4",
    "data.num_train=32",
    "optimizer.lr=0.01",
    "backbone.downsample=maxpool",
]


def tiny(*overrides: str) -> list[str]:
    """:data:`TINY` with ``overrides`` in place of its entries for the same keys."""
    keys = {override.split("=", 1)[0] for override in overrides}
    return [o for o in TINY if o.split("=", 1)[0] not in keys] + list(overrides)


def confusion_matrix(
    preds: torch.Tensor, masks: torch.Tensor, num_classes: int, ignore: int
) -> torch.Tensor:
    """(num_classes, num_classes) pixel counts, rows = label, columns = prediction, over the
    pixels whose label is not ``ignore``: the reference the dataset metrics are checked with."""
    valid = masks != ignore
    return torch.bincount(masks[valid] * num_classes + preds[valid], minlength=num_classes**2).view(
        num_classes, num_classes
    )


def group_options(group: str) -> list[str]:
    """Names of the options of a config group, from the files in conf/<group>/."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def compose_config(output_dir: Path, overrides: list[str]) -> DictConfig:
    """Compose conf/config.yaml like `python train.py` would, with outputs in ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir / "logs")
        del cfg.hydra
    return cfg


def evaluate_config(output_dir: Path, ckpt: Path, *overrides: str) -> DictConfig:
    """The config ``python -m upbench.evaluate ckpt=CKPT`` composes, on the tiny runs' trainer,
    with its record written to ``output_dir``; ``overrides`` are ``key=value`` updates."""
    cfg = OmegaConf.create(
        {"ckpt": str(ckpt), "seed": 0, "num_threads": None, "data": None, "paths": {}}
    )
    trainer = compose_config(output_dir, list(TINY)).trainer
    with open_dict(cfg):
        cfg.trainer = trainer
        cfg.paths.output_dir = str(output_dir)
        for override in overrides:
            key, value = override.split("=", 1)
            OmegaConf.update(cfg, key, value)
    return cfg


def train_losses(run_dir: Path) -> list[float]:
    """The epoch values of ``train/loss`` in a run's CSV log, in order."""
    with open(next(run_dir.rglob("metrics.csv"))) as f:
        return [float(row["train/loss"]) for row in csv.DictReader(f) if row.get("train/loss")]


class PoisonWeightsAtEpoch(pl.Callback):
    """Used by the divergence test: at the start of ``epoch`` it writes inf into the classifier
    head, so the next loss is NaN exactly as a diverged run's would be."""

    def __init__(self, epoch: int = 1):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            with torch.no_grad():
                pl_module.model.head.weight.fill_(float("inf"))


def upsampler_preset(name: str, in_channels: int, out_channels: int, scale: int):
    """conf/upsampler/<name>.yaml built as a decoder builds it (a guided method gets a guide with
    ``out_channels`` channels)."""
    from upbench.upsamplers.base import build_upsampler

    cfg = OmegaConf.load(CONF_DIR / "upsampler" / f"{name}.yaml")
    return build_upsampler(cfg, in_channels, out_channels, scale, out_channels)


def checkpoint_network(run_dir: Path, checkpoint: str):
    """``(network, datamodule)`` of a run directory: the network of its Hydra config with the
    weights of ``checkpoints/<checkpoint>.ckpt`` (the task's ``model.`` entries), in eval mode."""
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("test")
    network = build_model(cfg, datamodule.num_classes)
    ckpt = torch.load(
        run_dir / "checkpoints" / f"{checkpoint}.ckpt", map_location="cpu", weights_only=True
    )
    prefix = "model."
    network.load_state_dict(
        {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    )
    return network.eval(), datamodule


def assert_predictions_are_the_best_checkpoints(run_dir: Path) -> None:
    """The run's predictions.pt holds what its best-validation checkpoint predicts for the first
    test images, so the report's grid shows that network without loading it."""
    saved = read_predictions(run_dir)
    assert saved is not None and saved["weights"] == "best"
    network, datamodule = checkpoint_network(run_dir, "best")
    batch = datamodule.first_test_images(PREDICTED_IMAGES)
    with torch.no_grad():
        expected = network(batch["image"]).argmax(dim=1)
    assert saved["predictions"].dtype == torch.uint8 and len(expected) == PREDICTED_IMAGES
    assert torch.equal(saved["predictions"].long(), expected)
