"""A callback that makes each training epoch of a Slurm job's first start last longer in wall
time, not in work: a job that must still be running when Slurm's time limit comes, and that
finishes quickly once requeued. Results do not change (it only sleeps)."""

from __future__ import annotations

import os
import time

from lightning.pytorch import Callback


class Pause(Callback):
    """Sleeps ``seconds`` at the end of every training epoch (after its checkpoint is saved),
    or with ``every="batch"`` after every training batch (its loader workers alive meanwhile),
    unless Slurm has started the job again (``SLURM_RESTART_COUNT`` > 0)."""

    def __init__(self, seconds: float = 1.0, every: str = "epoch") -> None:
        self.seconds, self.every = seconds, every

    def _pause(self, now: str) -> None:
        if now == self.every and int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) == 0:
            time.sleep(self.seconds)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._pause("epoch")

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self._pause("batch")
