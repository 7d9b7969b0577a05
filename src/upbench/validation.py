"""Checks that refuse a bad configuration before any work starts, each naming the fix.

Unknown group options are refused by Hydra itself, which lists the valid ones; incompatible
backbone/decoder/upsampler combinations and scales the network cannot produce are refused when the
model is built (:mod:`upbench.decoders.unet`, :mod:`upbench.model`, the upsamplers). This module
holds the rest: checks on plain values and on how the parts fit the data.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig


class ConfigError(ValueError):
    """A configuration that cannot work; the message says what to change."""


def is_int(value: object) -> bool:
    """An int, but not a bool (``True`` is an int in Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(key: str, value: object) -> int:
    """``value`` if it is an int >= 1, else a ValueError naming ``key``, the option as the user
    sets it (``backbone.width``)."""
    if not is_int(value) or value < 1:
        raise ValueError(f"{key} must be a positive integer, got {value!r}")
    return value


def non_negative_int(key: str, value: object) -> int:
    """``value`` if it is an int >= 0, else a ValueError naming ``key``."""
    if not is_int(value) or value < 0:
        raise ValueError(f"{key} must be a non-negative integer, got {value!r}")
    return value


def _available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def validate_config(cfg: DictConfig, launcher: str | None = None) -> None:
    """Checks that need only the composed config; ``launcher`` is the Hydra launcher of a
    multirun (``None`` for a single run)."""
    if launcher in ("basic", "joblib") and cfg.trainer.get("strategy") == "ddp":
        raise ConfigError(
            "trainer=ddp relaunches train.py for every rank, which breaks a Hydra multirun on the "
            f"{launcher} launcher: use trainer=ddp_spawn, or hydra/launcher=slurm "
            "(one task per job)"
        )
    if not isinstance(cfg.seed, int):
        raise ConfigError(f"seed must be an integer, got {cfg.seed!r}")
    lr = cfg.optimizer.get("lr")
    if lr is not None and not (isinstance(lr, int | float) and lr > 0):
        raise ConfigError(f"optimizer.lr must be a positive number, got {lr!r}")
    max_epochs = cfg.trainer.get("max_epochs")
    if max_epochs is not None and max_epochs < 1 and max_epochs != -1:
        raise ConfigError(f"trainer.max_epochs must be >= 1 (or -1 for no limit), got {max_epochs}")
    batch_size = cfg.data.get("batch_size")
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"data.batch_size must be >= 1, got {batch_size}")
    workers = cfg.data.get("num_workers")
    if workers is not None and workers < 0:
        raise ConfigError(f"data.num_workers must be >= 0, got {workers}")
    if workers and workers > _available_cpus():
        warnings.warn(
            f"data.num_workers={workers} exceeds the {_available_cpus()} CPUs this process may "
            f"use; set data.num_workers={_available_cpus()} or lower to avoid oversubscription",
            stacklevel=2,
        )
    accelerator = cfg.trainer.get("accelerator")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator} but no CUDA device is visible: use trainer=default "
            "(CPU) or run on a machine with a GPU"
        )
    if cfg.trainer.get("sync_batchnorm") and accelerator == "cpu":
        raise ConfigError(
            "trainer.sync_batchnorm=true needs GPUs (SyncBatchNorm has no CPU implementation): "
            "set trainer.sync_batchnorm=false for CPU DDP"
        )
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if cfg.trainer.get("channels_last") and not on_gpu:
        raise ConfigError(
            "trainer.channels_last=true needs a GPU: torch 2.14's CPU convolution backward crashes "
            "(double free) with NHWC tensors here; set trainer.channels_last=false on CPU"
        )
    precision = str(cfg.trainer.get("precision"))
    if precision in ("16", "16-mixed") and not on_gpu:
        # Lightning would train in bf16 with only a warning, while results.json said fp16.
        raise ConfigError(
            f"trainer.precision={precision}: fp16 mixed precision needs a GPU; on CPU use "
            "trainer.precision=bf16-mixed (or 32)"
        )
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and not Path(ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={ckpt_path} does not exist: pass the path of a .ckpt file")


def validate_setup(cfg: DictConfig, datamodule, model) -> None:
    """Checks that need the instantiated data module and model (both cheap to build)."""
    requested = cfg.data.get("num_classes")
    if requested is not None and requested != datamodule.num_classes:
        raise ConfigError(
            f"data.num_classes={requested} but {type(datamodule).__name__} has "
            f"{datamodule.num_classes} classes: drop the override or set "
            f"data.num_classes={datamodule.num_classes}"
        )
    crop = getattr(datamodule, "crop_size", None)
    if crop is not None:
        sizes = crop if isinstance(crop, list | tuple) else (crop, crop)
        if any(size % model.output_stride for size in sizes):
            raise ConfigError(
                f"data.crop_size={crop} is not divisible by the network's output stride "
                f"{model.output_stride}: pick a multiple of {model.output_stride}"
            )


def load_checkpoint_safely(path: str | Path) -> dict[str, Any]:
    """The checkpoint; a corrupt or truncated one is refused before training touches anything."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ConfigError(
            f"checkpoint {path} is corrupt or truncated ({type(error).__name__}: {error}). "
            "Nothing was changed; other checkpoints in its folder are untouched - pass one of "
            "them with ckpt_path=..., or delete this file to start over"
        ) from error
