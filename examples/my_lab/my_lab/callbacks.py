"""The lab's callback: how long each training epoch took, as a CSV in the run folder (the lab
compares its machines with it)."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import lightning.pytorch as L


class EpochTimes(L.Callback):
    """Writes ``<path>`` (one row per training epoch: ``epoch,seconds``).

    Args:
        path: the CSV file, usually in the run folder (``${paths.output_dir}/epoch_times.csv``).
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        new = not self.path.is_file()
        with self.path.open("a", newline="") as f:
            out = csv.writer(f)
            if new:
                out.writerow(["epoch", "seconds"])
            out.writerow([trainer.current_epoch, round(time.perf_counter() - self._start, 3)])
