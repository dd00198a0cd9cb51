"""The run's two checkpoints: the best one (Lightning's ``ModelCheckpoint``, found by
:func:`best_checkpointing`) and the one a stopped run continues from (:class:`ResumePoint`)."""

from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as L
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint


def best_checkpointing(trainer: L.Trainer) -> ModelCheckpoint | None:
    """The trainer's best-checkpoint callback (``trainer.checkpoint_callback`` is merely the
    first :class:`Checkpoint`, which may be a :class:`ResumePoint`)."""
    return next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)


class ResumePoint(Checkpoint):
    """Writes ``<dirpath>/<filename>`` at the end of every training epoch, after the epoch's
    learning-rate step (the classifier takes it in its own ``on_train_epoch_end``, which
    Lightning calls before a :class:`Checkpoint`'s), atomically: a kill while writing leaves
    the previous one.

    Why not ``ModelCheckpoint(save_last=True)``: it writes ``last.ckpt`` only when it saves a
    best checkpoint, so a run whose metric stalled resumes epochs back, and it writes at the end
    of validation, before the epoch's scheduler step.

    Args:
        dirpath: the run's checkpoint folder.
        filename: ``last.ckpt``: what ``resume=<run dir>`` and a requeued Slurm job read.
    """

    def __init__(self, dirpath: str | Path, filename: str = "last.ckpt") -> None:
        self.path = Path(dirpath) / filename

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        part = self.path.with_name(self.path.name + ".part")
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(part)  # every rank takes part; rank 0 writes
        if trainer.is_global_zero:
            os.replace(part, self.path)
        trainer.strategy.barrier("resume point saved")
