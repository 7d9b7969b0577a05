"""Checkpointing that never leaves a half-written file, keeps state on interruption and carries
a resumed run's wall time."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

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


class RunWallTime(pl.Callback):
    """Saves in every checkpoint the wall time the run has spent so far, so that a run resumed
    from a checkpoint reports the time of all its segments in ``results.json``, not only the last
    one's. A job killed outright (SIGKILL, a machine that goes away) leaves no record of its
    time but its last checkpoint; multi-session sweeps resume such jobs routinely.

    ``spent_s`` is the time saved in the checkpoint the run resumes from (0 for a fresh run);
    the clock starts when the callback is made, which the runner does as the run's record starts.
    """

    def __init__(self, spent_s: float = 0.0) -> None:
        self.spent_s = spent_s
        # Wall clock, not perf_counter: under ddp_spawn the saving process is a spawned worker.
        self._started = time.time()

    def state_dict(self) -> dict[str, Any]:
        return {"wall_time_s": self.spent_s + time.time() - self._started}

    @classmethod
    def saved_in(cls, checkpoint: dict[str, Any]) -> float:
        """The wall time saved in a loaded checkpoint; 0 for one saved without this callback."""
        # Lightning keys a callback's state by its state_key, the class's qualified name.
        state = checkpoint.get("callbacks", {}).get(cls.__qualname__)
        return float(state["wall_time_s"]) if state else 0.0
