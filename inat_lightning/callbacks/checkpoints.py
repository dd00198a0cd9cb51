"""The run's two checkpoints: the best one (Lightning's ``ModelCheckpoint``, found by
:func:`best_checkpointing`) and the one a stopped run continues from (:class:`ResumePoint`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint

from inat_lightning import run_files
from inat_lightning.models.metrics import scalar_metrics


def last_metrics(trainer: L.Trainer) -> dict[str, float]:
    """The metrics of the trainer's last epoch: logged by this fit, else (a fit resumed after its
    last epoch, which ran none) as its :class:`ResumePoint` saved them."""
    logged = scalar_metrics(trainer.callback_metrics)
    saved = next((c.metrics for c in trainer.callbacks if isinstance(c, ResumePoint)), {})
    return logged or dict(saved)


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
        keep_after_fit: ``False`` deletes it once the run has written its results
            (:func:`drop_resume_points`): a sweep of many runs then keeps only their best
            checkpoints; a finished run cannot be continued.
        every_n_train_steps: also write it every N optimizer steps inside an epoch (``None``:
            at epoch ends only). A run resumed from such a point continues mid-epoch exactly
            with a loader that keeps its place (``data=shards``); with another loader Lightning
            warns and the rest of that epoch is drawn anew.
    """

    def __init__(
        self,
        dirpath: str | Path,
        filename: str = run_files.LAST_CHECKPOINT_NAME,
        keep_after_fit: bool = True,
        every_n_train_steps: int | None = None,
    ) -> None:
        ok = every_n_train_steps is None or (
            isinstance(every_n_train_steps, int) and every_n_train_steps >= 1
        )
        if not ok:
            raise ValueError(f"every_n_train_steps={every_n_train_steps!r}: must be >= 1 or null")
        self.path = Path(dirpath) / filename
        self.keep_after_fit = keep_after_fit
        self.every_n_train_steps = every_n_train_steps
        self._saved_step = -1
        #: the last epoch's logged metrics: saved in ``last.ckpt``, and restored from it, so a
        #: run resumed after its last epoch (killed before it wrote its results) reports them
        self.metrics: dict[str, float] = {}

    def state_dict(self) -> dict[str, Any]:
        return {"metrics": dict(self.metrics)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Only names and numbers are kept from the file (a checkpoint may come from anyone)."""
        found = state_dict.get("metrics") if isinstance(state_dict, dict) else None
        self.metrics = {
            k: float(v)
            for k, v in (found.items() if isinstance(found, dict) else ())
            if isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
        }

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        n, step = self.every_n_train_steps, trainer.global_step
        last = i + 1 >= trainer.num_training_batches  # the epoch's end writes it anyway
        stepped = (i + 1) % trainer.accumulate_grad_batches == 0  # no gradient half-accumulated
        due = n and step and step % n == 0 and step != self._saved_step
        if due and stepped and not last and not trainer.fast_dev_run:
            self._save(trainer)
            self._saved_step = step

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        self.metrics = scalar_metrics(trainer.callback_metrics)  # saved with it: state_dict
        self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        part = self.path.with_name(self.path.name + ".part")
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # the whole state (optimizer, loops, callbacks): what exact resume needs. Said, so that
        # Lightning does not log a default that reads like a safety warning at every epoch.
        trainer.save_checkpoint(part, weights_only=False)  # every rank takes part; rank 0 writes
        if trainer.is_global_zero:
            os.replace(part, self.path)
        trainer.strategy.barrier("resume point saved")


def drop_resume_points(trainer: L.Trainer) -> None:
    """Once a run has written its results: delete the ``last.ckpt`` of a :class:`ResumePoint`
    told not to keep it (until then a requeued or resumed run still continues from it)."""
    for c in trainer.callbacks:
        if isinstance(c, ResumePoint) and not c.keep_after_fit and trainer.is_global_zero:
            c.path.unlink(missing_ok=True)
