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
        keep_after_fit: ``False`` deletes it once the fit has finished (a sweep of many runs
            then keeps only their best checkpoints; a finished run cannot be continued).
    """

    def __init__(
        self, dirpath: str | Path, filename: str = "last.ckpt", keep_after_fit: bool = True
    ) -> None:
        self.path = Path(dirpath) / filename
        self.keep_after_fit = keep_after_fit

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

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Called only when the fit ran to its end (not on an interruption)."""
        if not self.keep_after_fit and trainer.is_global_zero:
            self.path.unlink(missing_ok=True)
