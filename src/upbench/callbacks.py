"""Checkpointing that never leaves a half-written file and keeps state on interruption."""

from __future__ import annotations

import os
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

INTERRUPTED_CKPT = "interrupted.ckpt"


class AtomicModelCheckpoint(ModelCheckpoint):
    """:class:`ModelCheckpoint` whose files appear atomically (write ``*.tmp``, then rename), so a
    crash or kill during a save leaves the previous good checkpoint in place.

    On SIGINT/SIGTERM it also saves the mid-epoch state to ``interrupted.ckpt`` for inspection;
    ``resume=true`` continues from ``last.ckpt`` (the last finished epoch), which makes a resumed
    run bit-identical to an uninterrupted one if the network draws no random numbers while
    training (no dropout: the global random state is not saved). A diverged run (NaN loss)
    saves nothing, so ``last.ckpt`` remains the last good state.
    """

    # Lightning >= 2.5 rewrites last.ckpt only alongside a new top-k checkpoint, so after an
    # epoch whose monitored metric did not improve last.ckpt lagged behind the weights; resume
    # and the final-weights record assume it holds the end of the latest epoch. Each hook below
    # brings it up to date where Lightning saves (the epoch end, or the validation end).
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._bring_last_up_to_date(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._bring_last_up_to_date(trainer)

    def _bring_last_up_to_date(self, trainer: pl.Trainer) -> None:
        # _should_skip_saving_checkpoint is also true when this step has been saved already.
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        tmp = f"{filepath}.tmp"
        super()._save_checkpoint(trainer, tmp)
        if trainer.is_global_zero:
            os.replace(tmp, filepath)
        self._last_checkpoint_saved = filepath

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, KeyboardInterrupt | SystemExit) or trainer.sanity_checking:
            return
        if self.dirpath is None or bool(trainer.fast_dev_run):
            return
        path = str(Path(self.dirpath) / INTERRUPTED_CKPT)
        tmp = f"{path}.tmp"
        trainer.save_checkpoint(tmp, self.save_weights_only)
        if trainer.is_global_zero:
            os.replace(tmp, path)
