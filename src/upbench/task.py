"""LightningModule that trains and evaluates a :class:`~upbench.model.SegmentationModel`."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities.warnings import PossibleUserWarning
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassJaccardIndex

from upbench.data.base import colorize
from upbench.instantiate import instantiate
from upbench.losses import SegmentationLoss
from upbench.metrics import SPLITS, MetricDeclaration, declared_metrics
from upbench.model import build_model

# Every epoch value is logged already reduced across ranks (see _log_split_metrics), which is
# what this warning asks for.
warnings.filterwarnings(
    "ignore", message=r".*sync_dist=True.* to accumulate the metric", category=PossibleUserWarning
)


class DivergenceError(RuntimeError):
    """The loss became NaN or infinite."""


def _split_metrics(
    declarations: Sequence[MetricDeclaration], split: str, num_classes: int, ignore_index: int
) -> MetricCollection:
    # Label checks (a torch.unique per update) run on the evaluation splits only: validation sees
    # the data first (sanity check) and the per-step cost stays off the training loop.
    validate = split != "train"
    return MetricCollection(
        {
            d.name: d.build(num_classes, ignore_index, validate)
            for d in declarations
            if split in d.splits
        }
    )


class SegmentationTask(pl.LightningModule):
    """Training with a swappable loss, dataset-level mIoU / pixel accuracy on every split.

    The network, loss, optimiser and schedule are each given either as an object or as its
    config node (a mapping, as ``conf/`` writes it). Config nodes are stored in the checkpoint's
    hyperparameters with the label space, so a checkpoint of a task built from configs (as
    ``train.py`` builds it) reloads itself: ``SegmentationTask.load_from_checkpoint(path)``.

    Args:
        model: the network, (N, C, H, W) -> (N, num_classes, H, W) logits, or the config of a
            :class:`~upbench.model.SegmentationModel` (its ``backbone``, ``decoder`` and
            ``upsampler`` nodes, :func:`upbench.model.network_config`).
        num_classes, ignore_index: label space of the dataset.
        optimizer: ``params -> Optimizer`` (a ``_partial_`` Hydra node), or ``None`` for a task
            that is only evaluated.
        scheduler: ``(optimizer, T_max) -> LRScheduler`` stepped every batch, with ``T_max`` the
            total number of training steps (cosine annealing by default), or ``None``.
        loss: ``(logits, mask) -> scalar`` (the ``loss`` group, :mod:`upbench.losses`, whose node
            is built with ``num_classes`` and ``ignore_index``); ``None`` is plain cross-entropy.
        class_names: per-class names for the per-class IoU at test time.
        palette: ``num_classes`` RGB colours for the prediction overlays.
        num_overlays: images of the first validation batch logged as image / truth / prediction.
        channels_last: run the network in NHWC memory format (faster convolutions on GPUs).
        compile: run the network through ``torch.compile``.
        data: the config node of the data the task is trained on. Not used here: recorded in the
            checkpoint, so that ``upbench.evaluate`` tests on the same data by default.
    """

    def __init__(
        self,
        model: nn.Module | Mapping,
        num_classes: int,
        optimizer: Callable | Mapping | None,
        scheduler: Callable | Mapping | None = None,
        loss: nn.Module | Mapping | None = None,
        ignore_index: int = 255,
        class_names: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        num_overlays: int = 4,
        channels_last: bool = False,
        compile: bool = False,
        data: Mapping | None = None,
    ):
        super().__init__()
        configs = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "loss": loss}
        self.save_hyperparameters(
            {name: _plain(node) for name, node in configs.items() if isinstance(node, Mapping)}
            | {
                "num_classes": num_classes,
                "ignore_index": ignore_index,
                "class_names": None if class_names is None else list(class_names),
                "palette": None if palette is None else [list(map(int, c)) for c in palette],
                "num_overlays": num_overlays,
                "channels_last": channels_last,
                "compile": compile,
                "data": None if data is None else _plain(data),
            },
            logger=False,  # the runner logs the whole run config
        )
        if isinstance(model, Mapping):
            model = build_model(model, num_classes)
        if isinstance(loss, Mapping):
            loss = instantiate(loss, num_classes=num_classes, ignore_index=ignore_index)
        if isinstance(optimizer, Mapping):
            optimizer = instantiate(optimizer)
        if isinstance(scheduler, Mapping):
            scheduler = instantiate(scheduler)
        self.channels_last = channels_last
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        if compile:
            model.compile()  # in place, so state_dict keys stay those of the plain model
        self.model = model
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.loss = loss if loss is not None else SegmentationLoss(num_classes, ignore_index)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.class_names = list(class_names or [str(i) for i in range(num_classes)])
        self.register_buffer(
            "palette",
            torch.tensor(palette, dtype=torch.uint8)
            if palette is not None
            else _default_palette(num_classes),
            persistent=False,
        )
        self.num_overlays = num_overlays
        # The metrics registered when the task is built (upbench.metrics.base), by name.
        self.declarations = {d.name: d for d in declared_metrics()}
        for split in SPLITS:  # train_metrics, ...: a ModuleDict may not have a key "train"
            metrics = _split_metrics(self.declarations.values(), split, num_classes, ignore_index)
            setattr(self, f"{split}_metrics", metrics)
            setattr(self, f"{split}_loss", MeanMetric())
        self.test_class_iou = MulticlassJaccardIndex(
            num_classes, average="none", ignore_index=ignore_index
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def _shared_step(self, batch: dict, split: str) -> tuple[Tensor, Tensor, Tensor]:
        logits = self(batch["image"])
        loss = self.loss(logits, batch["mask"])
        # Same first-maximum indices as argmax(dim=1), which is ~20x slower on CPU (torch 2.14).
        preds = logits.detach().max(dim=1).indices
        getattr(self, f"{split}_loss").update(loss.detach(), weight=preds.shape[0])
        available = {**batch, "preds": preds, "logits": logits.detach()}
        for name, metric in getattr(self, f"{split}_metrics").items(keep_base=True):
            self.declarations[name].update(metric, available)
        return loss, preds, logits

    def _log_split_metrics(self, split: str) -> None:
        """Compute every epoch value of ``split``, the loss included, here.

        torchmetrics sums the states across processes first, so every rank runs the same
        collectives in the same order. Logging with ``sync_dist=True`` instead deadlocks DDP:
        Lightning reduces such values when the progress bar reads them, which happens on rank 0
        only, in a callback hook that runs before this one. (Trimap also returns one value per
        band width, which ``self.log`` of a metric object cannot take.)
        """
        values = {}
        metrics = {
            "loss": getattr(self, f"{split}_loss"),
            **dict(getattr(self, f"{split}_metrics").items(keep_base=True)),
        }
        for name, metric in metrics.items():
            if metric.update_called:
                result = metric.compute()
                values |= result if isinstance(result, dict) else {name: result}
            metric.reset()
        self.log_dict({f"{split}/{k}": v for k, v in values.items()}, prog_bar=split != "test")

    def on_train_epoch_end(self) -> None:
        self._log_split_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self._log_split_metrics("val")

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss, _, _ = self._shared_step(batch, "train")
        if not torch.isfinite(loss):
            raise DivergenceError(
                f"training loss became {loss.item()} at global step {self.global_step} "
                f"(epoch {self.current_epoch}, batch {batch_idx}). Likely causes: a learning rate "
                "that is too high (lower optimizer.lr), or fp16 overflow under mixed precision "
                "(use trainer.precision=32 or bf16-mixed). The last good checkpoint is kept."
            )
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        _, preds, _ = self._shared_step(batch, "val")
        if batch_idx == 0:
            self._log_overlays(batch, preds)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        _, preds, _ = self._shared_step(batch, "test")
        self.test_class_iou.update(preds, batch["mask"])

    def on_test_epoch_end(self) -> None:
        self._log_split_metrics("test")
        per_class = self.test_class_iou.compute()
        for name, iou in zip(self.class_names, per_class, strict=True):
            self.log(f"test/IoU_{name}", iou)
        self.test_class_iou.reset()

    def _log_overlays(self, batch: dict, preds: Tensor) -> None:
        loggers = [lg for lg in self.loggers if isinstance(lg, WandbLogger)]
        if not loggers or self.trainer.sanity_checking:
            return
        n = min(self.num_overlays, preds.shape[0])
        image = batch["image"][:n]
        lo = image.amin(dim=(1, 2, 3), keepdim=True)
        hi = image.amax(dim=(1, 2, 3), keepdim=True)
        image = ((image - lo) / (hi - lo).clamp_min(1e-6) * 255).to(torch.uint8)[:, :3]
        truth = self.colorize(batch["mask"][:n])
        pred = self.colorize(preds[:n])
        rows = [
            torch.cat([im, t, p], dim=-1).permute(1, 2, 0).cpu().numpy()
            for im, t, p in zip(image.expand(-1, 3, -1, -1), truth, pred, strict=True)
        ]
        for logger in loggers:
            logger.log_image(
                "val/overlays",
                rows,
                step=self.global_step,
                caption=["image | truth | prediction"] * len(rows),
            )

    def colorize(self, labels: Tensor) -> Tensor:
        """(N, H, W) class ids -> (N, 3, H, W) uint8 colours; ignored pixels are white."""
        return colorize(labels, self.palette, self.ignore_index)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = self.scheduler_factory(optimizer, T_max=total_steps)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def _plain(node: Mapping) -> dict[str, Any]:
    """A config node as plain containers, which a weights-only checkpoint load accepts."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)


def _default_palette(num_classes: int) -> Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (num_classes, 3), generator=g, dtype=torch.uint8)
