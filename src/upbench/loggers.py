"""Lightning's CSV logger, safe to continue in a process that did not start the file."""

from __future__ import annotations

import csv

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger as LightningCSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter


class _ContinuingWriter(ExperimentWriter):
    """Starts from the header already on disk. Lightning's writer starts from no keys, so a copy
    pickled into a new process (``ddp_spawn`` runs fit and test in separate spawns) rewrites
    ``metrics.csv`` with only its own keys and fails on the earlier rows."""

    def _record_new_keys(self) -> set[str]:
        if not self.metrics_keys and self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = next(csv.reader(file), [])
        return super()._record_new_keys()


class CSVLogger(LightningCSVLogger):
    """:class:`pytorch_lightning.loggers.CSVLogger` whose writer continues an existing file."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment
