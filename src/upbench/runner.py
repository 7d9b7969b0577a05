"""One training run: instantiate the configured parts, fit, test, and record ``results.json``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import Logger, WandbLogger
from rich.console import Console
from rich.table import Table

from upbench.model import SegmentationModel
from upbench.results import write_results
from upbench.task import SegmentationTask

CHOICE_GROUPS = ("backbone", "upsampler", "decoder", "data")


def run_choices(cfg: DictConfig) -> dict[str, str]:
    """The option picked in each swappable group, e.g. ``{"upsampler": "carafe", ...}``."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    return {
        group: choices.get(group) or str(cfg[group].get("_target_", "?")).rsplit(".", 1)[-1]
        for group in CHOICE_GROUPS
    }


def build_model(cfg: DictConfig, num_classes: int) -> SegmentationModel:
    return SegmentationModel(
        backbone=hydra.utils.instantiate(cfg.backbone),
        decoder=hydra.utils.instantiate(cfg.decoder),
        upsampler=cfg.upsampler,
        num_classes=num_classes,
    )


def _instantiate_loggers(cfg: DictConfig, tags: list[str]) -> list[Logger]:
    loggers = []
    for name, node in (cfg.get("logger") or {}).items():
        if name == "wandb":
            group = node.get("group")
            if (
                group is None
                and HydraConfig.initialized()
                and HydraConfig.get().mode.name == "MULTIRUN"
            ):
                group = f"{cfg.task_name}/{Path(HydraConfig.get().sweep.dir).name}"
            logger = hydra.utils.instantiate(node, tags=tags, group=group)
        else:
            logger = hydra.utils.instantiate(node)
        loggers.append(logger)
    return loggers


def _instantiate_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    return [hydra.utils.instantiate(node) for node in (cfg.get("callbacks") or {}).values()]


def _metrics(trainer: pl.Trainer, prefix: str) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(prefix)}


def _print_summary(record: dict[str, Any]) -> None:
    table = Table(
        title=f"upbench - {record['choices']['upsampler']} on "
        f"{record['choices']['backbone']} / {record['choices']['data']}"
    )
    table.add_column("metric")
    table.add_column("final", justify="right")
    table.add_column("best-val ckpt", justify="right")
    keys = sorted(k for k in record["metrics"] if k.startswith(("val/", "test/")))
    for key in keys:
        best = record["best_metrics"].get(key)
        table.add_row(key, f"{record['metrics'][key]:.4f}", "" if best is None else f"{best:.4f}")
    table.caption = (
        f"params {record['params']['total']:,} (upsamplers "
        f"{record['params']['upsampler']:,}) - {record['wall_time_s']:.1f} s"
    )
    Console().print(table)


def train(cfg: DictConfig) -> float | None:
    """Fit and test the configured model; returns ``cfg.optimized_metric`` for sweepers."""
    start = time.perf_counter()
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    choices = run_choices(cfg)
    record: dict[str, Any] = {
        "status": "running",
        "error": None,
        "choices": choices,
        "seed": cfg.seed,
        "metrics": {},
        "best_metrics": {},
        "params": {},
        "wall_time_s": 0.0,
        "output_dir": str(output_dir),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    write_results(output_dir, record)
    loggers: list[Logger] = []
    try:
        pl.seed_everything(cfg.seed, workers=True)
        datamodule = hydra.utils.instantiate(cfg.data)
        model = build_model(cfg, datamodule.num_classes)
        record["params"] = {
            "total": sum(p.numel() for p in model.parameters()),
            "upsampler": sum(p.numel() for p in model.decoder.upsamplers().parameters()),
        }
        task = SegmentationTask(
            model,
            num_classes=datamodule.num_classes,
            ignore_index=datamodule.ignore_index,
            optimizer=hydra.utils.instantiate(cfg.optimizer),
            scheduler=hydra.utils.instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
            class_names=datamodule.class_names,
            palette=datamodule.palette,
        )
        tags = [f"{group}:{name}" for group, name in choices.items()] + [f"seed:{cfg.seed}"]
        tags += list(cfg.get("tags") or [])
        loggers = _instantiate_loggers(cfg, tags)
        for logger in loggers:
            logger.log_hyperparams(record["config"])
        trainer: pl.Trainer = hydra.utils.instantiate(
            cfg.trainer, logger=loggers or False, callbacks=_instantiate_callbacks(cfg)
        )
        trainer.fit(task, datamodule=datamodule)
        if trainer.interrupted:
            record["status"] = "interrupted"
            record["metrics"] = _metrics(trainer, "val/")
            return None
        record["metrics"] = _metrics(trainer, "val/")
        trainer.test(task, datamodule=datamodule, verbose=False)
        record["metrics"].update(_metrics(trainer, "test/"))
        checkpoint = trainer.checkpoint_callback
        if isinstance(checkpoint, ModelCheckpoint) and checkpoint.best_model_path:
            record["best_metrics"][cfg.optimized_metric] = float(checkpoint.best_model_score)
            trainer.test(
                task, datamodule=datamodule, ckpt_path="best", verbose=False, weights_only=True
            )
            record["best_metrics"].update(_metrics(trainer, "test/"))
        record["status"] = "finished"
    except BaseException as error:
        record["status"] = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        record["error"] = f"{type(error).__name__}: {error}"
        raise
    finally:
        record["wall_time_s"] = time.perf_counter() - start
        write_results(output_dir, record)
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.finish()
    _print_summary(record)
    best = record["best_metrics"].get(cfg.optimized_metric)
    return best if best is not None else record["metrics"].get(cfg.optimized_metric)
