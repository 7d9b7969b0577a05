"""Test a trained checkpoint: ``python -m upbench.evaluate ckpt=PATH [data=... data.root=...]``.

The ``eval.py`` of lightning-hydra-template. The checkpoint rebuilds its own network, loss and
label space (``SegmentationTask.load_from_checkpoint``); the test split is the checkpoint's
training data unless a ``data`` option is given. The test metrics are those of training, and
go to ``results.json`` in the run directory (``logs/evaluate/runs/<time>``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from upbench.conf import conf_dir
from upbench.data.roots import DatasetRootError
from upbench.instantiate import instantiate
from upbench.results import recording
from upbench.runner import instantiate_trainer, route_lightning_logs_to_root
from upbench.task import SegmentationTask
from upbench.validation import ConfigError, load_checkpoint_safely


def load_task(path: str | Path) -> SegmentationTask:
    """The task of a checkpoint written by ``train.py``, in eval mode on the CPU."""
    if not Path(path).is_file():
        raise ConfigError(f"ckpt={path} does not exist: pass the path of a .ckpt file")
    load_checkpoint_safely(path)
    hparams = torch.load(path, map_location="cpu", weights_only=True).get("hyper_parameters")
    if not hparams or not isinstance(hparams.get("model"), dict):
        raise ConfigError(
            f"ckpt={path} does not record its network (it was written before checkpoints "
            "stored their config): retrain it with this version of train.py"
        )
    task = SegmentationTask.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    return task.eval()


def _data_config(cfg: DictConfig, task: SegmentationTask) -> Any:
    if cfg.get("data") is not None:
        return cfg.data
    if task.hparams.get("data") is None:
        raise ConfigError(
            f"ckpt={cfg.ckpt} does not record its data: pass a data option, e.g. data=synthetic"
        )
    return task.hparams.data


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test ``cfg.ckpt`` on the test split; returns the test metrics."""
    route_lightning_logs_to_root()
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if cfg.get("num_threads"):
        torch.set_num_threads(cfg.num_threads)
    task = load_task(cfg.ckpt)
    data = _data_config(cfg, task)
    pl.seed_everything(cfg.seed, workers=True)
    try:
        datamodule = instantiate(data)
    except (ValueError, DatasetRootError) as error:
        raise ConfigError(str(error)) from error
    if datamodule.num_classes != task.num_classes:
        raise ConfigError(
            f"the data has {datamodule.num_classes} classes but ckpt={cfg.ckpt} was trained for "
            f"{task.num_classes}: evaluate it on data with the same label space"
        )
    record: dict[str, Any] = {
        "error": None,
        "checkpoint": str(Path(cfg.ckpt).resolve()),
        "data": OmegaConf.to_container(data, resolve=True) if OmegaConf.is_config(data) else data,
        "metrics": {},
        "wall_time_s": 0.0,
        "output_dir": str(output_dir),
    }
    with recording(output_dir, record):
        trainer = instantiate_trainer(cfg, logger=False, callbacks=[], enable_checkpointing=False)
        trainer.test(task, datamodule=datamodule, verbose=False)
        record["metrics"] = {
            key: float(value)
            for key, value in trainer.callback_metrics.items()
            if key.startswith("test/")
        }
    return record["metrics"]


def _main(cfg: DictConfig) -> None:
    try:
        metrics = evaluate(cfg)
    except ConfigError as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(2)
    width = max(map(len, metrics))
    for key in sorted(metrics):
        print(f"{key:<{width}}  {metrics[key]:.4f}")
    print(f"results: {Path(HydraConfig.get().runtime.output_dir) / 'results.json'}")


def main() -> None:
    try:
        config_path = str(conf_dir())
    except FileNotFoundError as error:
        sys.exit(f"Error: {error}")
    hydra.main(config_path=config_path, config_name="evaluate", version_base="1.3")(_main)()


if __name__ == "__main__":
    main()
