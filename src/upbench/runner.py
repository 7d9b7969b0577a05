"""One training run: instantiate the configured parts, fit, test, and record ``results.json``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only
from rich.console import Console
from rich.table import Table

from upbench.callbacks import RunWallTime
from upbench.data.roots import DatasetRootError
from upbench.instantiate import instantiate
from upbench.losses import resolve_class_weights
from upbench.model import network_config
from upbench.results import (
    PREDICTED_IMAGES,
    RESULTS_FILE,
    read_results,
    recipe_changes,
    recording,
    write_predictions,
)
from upbench.task import SegmentationTask
from upbench.validation import (
    ConfigError,
    load_checkpoint_safely,
    validate_config,
    validate_setup,
)

log = logging.getLogger(__name__)

CHOICE_GROUPS = ("backbone", "upsampler", "decoder", "data")
# Keys of the trainer group that configure the network rather than pl.Trainer.
NETWORK_OPTIONS = ("channels_last", "compile")
# Where a run keeps the configs it was composed from (Hydra's default output_subdir).
HYDRA_FILES_DIR = ".hydra"


def run_choices(cfg: DictConfig) -> dict[str, str]:
    """The option picked in each swappable group, e.g. ``{"upsampler": "carafe", ...}``."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    return {
        group: choices.get(group) or str(cfg[group].get("_target_", "?")).rsplit(".", 1)[-1]
        for group in CHOICE_GROUPS
    }


def build_task(cfg: DictConfig, datamodule) -> SegmentationTask:
    """The LightningModule of ``cfg``, built from its config nodes so that its checkpoints
    reload themselves (``SegmentationTask.load_from_checkpoint``)."""
    return SegmentationTask(
        network_config(cfg),
        num_classes=datamodule.num_classes,
        ignore_index=datamodule.ignore_index,
        optimizer=cfg.optimizer,
        scheduler=cfg.get("scheduler") or None,
        loss=resolve_class_weights(cfg.loss, datamodule.class_frequencies),
        class_names=datamodule.class_names,
        palette=datamodule.palette,
        channels_last=cfg.trainer.get("channels_last", False),
        compile=cfg.trainer.get("compile", False),
        data=cfg.data,
    )


def seeded_setup(cfg: DictConfig):
    """Seed, then build the data module and the task, in the order that pairs runs by seed.

    The backbone is the first module built after seeding, so at the same ``seed`` it starts
    from the same weights whatever the upsampler (whose parameters are drawn after it); the data
    depend only on ``data.seed`` and the training order only on ``seed`` (see
    :class:`~upbench.data.base.SegmentationDataModule`). Differences between upsamplers at one
    seed are therefore paired: tested in ``tests/test_pairing.py``.
    """
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    return datamodule, build_task(cfg, datamodule)


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _multirun_launcher() -> str | None:
    return HydraConfig.get().runtime.choices.get("hydra/launcher") if is_multirun() else None


def _previous_run(cfg: DictConfig, output_dir: Path) -> dict[str, Any] | None:
    """The record already in ``output_dir``; refuses to overwrite one unless resuming."""
    if not (output_dir / RESULTS_FILE).exists():
        return None
    previous = read_results(output_dir)
    if previous["status"] == "finished":
        if is_multirun():
            return previous
        raise ConfigError(
            f"{output_dir} already holds a finished run and results are never overwritten: "
            "choose another hydra.run.dir (or leave it unset for a fresh timestamped one)"
        )
    if not cfg.get("resume") and not is_multirun():
        raise ConfigError(
            f"{output_dir} holds a run with status '{previous['status']}': pass resume=true to "
            "continue it from checkpoints/last.ckpt, or choose another hydra.run.dir"
        )
    return previous


def _refuse_other_job(previous: dict[str, Any], cfg: DictConfig, output_dir: Path) -> None:
    """A sweep skips a job whose directory holds a finished run, but the directory is named by
    the job's number: after the sweep's parameter lists change, number 5 can be another job, and
    after its experiment config changes (more epochs, another learning rate), every number holds
    a run of the old recipe. So a finished run is only skipped when it is this job's run: the
    same choices, seed and resolved config (but for :data:`upbench.results.NOT_RECIPE`)."""
    recorded = {**previous.get("choices", {}), "seed": previous.get("seed")}
    wanted = {**run_choices(cfg), "seed": cfg.seed}
    differing = [f"{key}={recorded.get(key)} there, {value} now" for key, value in wanted.items()
                 if recorded.get(key) != value]  # fmt: skip
    if differing:
        raise ConfigError(
            f"{output_dir} holds a finished run of another job ({'; '.join(differing)}): the "
            "sweep's parameter lists changed since it ran. Finish the old sweep with its own "
            "lists, or give the new one its own hydra.sweep.dir (make table SWEEP_DIR=...)"
        )
    if "config" not in previous:
        return
    changed = recipe_changes(previous["config"], OmegaConf.to_container(cfg, resolve=True))
    if changed:
        more = f"; and {len(changed) - 5} more" if len(changed) > 5 else ""
        raise ConfigError(
            f"{output_dir} holds a finished run of another recipe ({'; '.join(changed[:5])}{more}):"
            " the experiment's config changed since it ran. Give the new recipe its own"
            " hydra.sweep.dir (make table SWEEP_DIR=...), or remove the old runs (committed ones"
            " stay in git history)"
        )


def _save_hydra_files(cfg: DictConfig, output_dir: Path) -> None:
    """The files Hydra saves for a job, written here once the job is known to run:
    ``.hydra/config.yaml`` (the job's config), ``hydra.yaml`` and ``overrides.yaml`` (its
    command-line overrides). Hydra's own saving is off (``hydra.output_subdir: null``) because it
    writes them before the task starts, also for a finished job that a sweep rerun then skips:
    every rerun would rewrite the committed records of finished runs with this machine's paths
    and the rerun's overrides."""
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.instance().cfg
    folder = output_dir / HYDRA_FILES_DIR
    folder.mkdir(exist_ok=True)
    files = {
        "config.yaml": cfg,
        "hydra.yaml": hydra_cfg,
        "overrides.yaml": hydra_cfg.hydra.overrides.task,
    }
    for name, node in files.items():
        (folder / name).write_text(OmegaConf.to_yaml(node), encoding="utf-8")


def _resume_checkpoint(
    cfg: DictConfig, output_dir: Path, unfinished: bool
) -> tuple[str | None, float]:
    """``ckpt_path``, else ``last.ckpt`` when resuming: on ``resume=true``, and for an unfinished
    job of a sweep rerun into the same directory (so completing a sweep loses nothing); with the
    wall time the run had spent when that checkpoint was saved (0 without one)."""
    path = cfg.get("ckpt_path")
    if not path and (cfg.get("resume") or unfinished):
        last = output_dir / "checkpoints" / "last.ckpt"
        if last.is_file():
            path = str(last)
        else:
            log.warning("resume=true but %s does not exist yet: training from scratch", last)
    if not path:
        return None, 0.0
    return path, RunWallTime.saved_in(load_checkpoint_safely(path))


def _instantiate_loggers(cfg: DictConfig, tags: list[str]) -> list[Logger]:
    loggers = []
    for name, node in (cfg.get("logger") or {}).items():
        if name == "wandb":
            group = node.get("group")
            if group is None and is_multirun():
                group = f"{cfg.task_name}/{Path(HydraConfig.get().sweep.dir).name}"
            logger = instantiate(node, tags=tags, group=group)
        else:
            logger = instantiate(node)
        loggers.append(logger)
    return loggers


def _instantiate_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    return [instantiate(node) for node in (cfg.get("callbacks") or {}).values()]


def _best_score(checkpoint: Any) -> float | None:
    """The monitored score of the best checkpoint. Lightning's spawn launcher sends back the best
    path but not the score, so read it from the checkpoint file when it is missing."""
    if not isinstance(checkpoint, ModelCheckpoint) or checkpoint.monitor is None:
        return None
    if checkpoint.best_model_score is not None:
        return float(checkpoint.best_model_score)
    if not checkpoint.best_model_path:
        return None
    state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
    return float(state["callbacks"][checkpoint.state_key]["best_model_score"])


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


def _fit_and_test(
    cfg: DictConfig,
    record: dict[str, Any],
    ckpt_path: str | None,
    loggers: list[Logger],
    wall_time: RunWallTime,
) -> None:
    """Build, fit and test into ``record``. The loggers are appended to ``loggers`` as soon as
    they exist, so that the caller closes them whatever happens next."""
    if cfg.get("num_threads"):
        torch.set_num_threads(cfg.num_threads)
    try:
        datamodule, task = seeded_setup(cfg)
        validate_setup(cfg, datamodule, task.model)
    except (ValueError, DatasetRootError) as error:
        # A part refused the configuration while it was built (an upsampler option, a data
        # folder that is not there): a refusal, reported like the config checks', not a crash.
        raise ConfigError(str(error)) from error
    record["params"] = {
        "total": sum(p.numel() for p in task.model.parameters()),
        "upsampler": sum(p.numel() for p in task.model.decoder.upsamplers().parameters()),
    }
    tags = [f"{group}:{name}" for group, name in record["choices"].items()]
    tags += [f"seed:{cfg.seed}", *(cfg.get("tags") or [])]
    loggers += _instantiate_loggers(cfg, tags)
    for logger in loggers:
        logger.log_hyperparams(record["config"])
    trainer = instantiate_trainer(
        cfg, logger=loggers or False, callbacks=[*_instantiate_callbacks(cfg), wall_time]
    )
    trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    record["metrics"] = _metrics(trainer, "val/")
    trainer.test(task, datamodule=datamodule, verbose=False)
    record["metrics"].update(_metrics(trainer, "test/"))
    best_score = _best_score(trainer.checkpoint_callback)
    if best_score is not None:
        record["best_metrics"][cfg.optimized_metric] = best_score
        trainer.test(
            task, datamodule=datamodule, ckpt_path="best", verbose=False, weights_only=True
        )
        record["best_metrics"].update(_metrics(trainer, "test/"))
    if rank_zero_only.rank == 0:
        best = trainer.checkpoint_callback.best_model_path if best_score is not None else None
        _write_predictions(Path(cfg.paths.output_dir), task, datamodule, best)


def _write_predictions(
    output_dir: Path, task: SegmentationTask, datamodule, checkpoint: str | None
) -> None:
    """predictions.pt: the best-validation weights' classes (the final weights' without a best
    checkpoint) for the first test images, the run's column in the report's prediction grid.
    The checkpoint is loaded explicitly: under ddp_spawn the weights tested in the workers are
    not this process's."""
    if checkpoint:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
        task.load_state_dict(state)
    network = task.model.eval()
    batch = datamodule.first_test_images(PREDICTED_IMAGES)
    with torch.no_grad():
        logits = network(batch["image"].to(next(network.parameters()).device))
    write_predictions(output_dir, logits.argmax(dim=1), "best" if checkpoint else "final")


def instantiate_trainer(cfg: DictConfig, **kwargs: Any) -> pl.Trainer:
    """``pl.Trainer`` of the ``trainer`` node, without the keys that configure the network."""
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    for key in NETWORK_OPTIONS:
        trainer_cfg.pop(key, None)
    return instantiate(trainer_cfg, **kwargs)


def route_lightning_logs_to_root() -> None:
    """Lightning, imported before Hydra set up logging (this module imports it), found a root
    logger without handlers and gave its own loggers a console handler of their own with
    ``propagate = False``: its lines (devices, why fit stopped, ...) never reached Hydra's
    handlers, so the job's log file (``train.log``, ``evaluate.log``) missed them. Once the root
    logger has handlers, give them back to it; every Hydra task calls this first."""
    if not logging.getLogger().hasHandlers():
        return
    for name in ("pytorch_lightning", "lightning_fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:  # Lightning's own, not a user's file
                logger.removeHandler(handler)
        logger.propagate = True


def train(cfg: DictConfig) -> float | None:
    """Fit and test the configured model; returns ``cfg.optimized_metric`` for sweepers."""
    route_lightning_logs_to_root()
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # Under DDP every rank runs this function; only rank 0 reads and writes results.json.
    is_main = rank_zero_only.rank == 0
    previous = _previous_run(cfg, output_dir) if is_main else None
    if previous is not None and previous["status"] == "finished":
        _refuse_other_job(previous, cfg, output_dir)
        # On the console only: the job's train.log (committed with a table's runs) stays the
        # log of its training, however often the sweep is rerun.
        Console(stderr=True, soft_wrap=True).print(
            f"Skipping {output_dir}: it already holds a finished run", markup=False, highlight=False
        )
        best = previous["best_metrics"].get(cfg.optimized_metric)
        return best if best is not None else previous["metrics"].get(cfg.optimized_metric)
    if is_main:
        _save_hydra_files(cfg, output_dir)
    validate_config(cfg, launcher=_multirun_launcher())
    ckpt_path, spent_s = _resume_checkpoint(cfg, output_dir, unfinished=previous is not None)
    record: dict[str, Any] = {
        "error": None,
        "choices": run_choices(cfg),
        "seed": cfg.seed,
        "metrics": {},
        "best_metrics": {},
        "params": {},
        "wall_time_s": 0.0,
        "output_dir": str(output_dir),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    loggers: list[Logger] = []
    try:
        with recording(output_dir, record, write=is_main, spent_s=spent_s):
            _fit_and_test(cfg, record, ckpt_path, loggers, RunWallTime(spent_s))
    except (KeyboardInterrupt, SystemExit):
        log.warning("Interrupted: resume with resume=true hydra.run.dir=%s", output_dir)
        raise
    finally:
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.finish()
    if is_main:
        _print_summary(record)
    best = record["best_metrics"].get(cfg.optimized_metric)
    return best if best is not None else record["metrics"].get(cfg.optimized_metric)
