"""A callback that makes each training epoch of a Slurm job's first start last longer in wall
time, not in work: a job that must still be running when Slurm's time limit comes, and that
finishes quickly once requeued. Results do not change (it only sleeps)."""

from __future__ import annotations

import os
import time

from lightning.pytorch import Callback


class Pause(Callback):
    """Sleeps ``seconds`` at the end of every training epoch (after its checkpoint is saved),
    unless Slurm has started the job again (``SLURM_RESTART_COUNT`` > 0)."""

    def __init__(self, seconds: float = 1.0) -> None:
        self.seconds = seconds

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) == 0:
            time.sleep(self.seconds)
