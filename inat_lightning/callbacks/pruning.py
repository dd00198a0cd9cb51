"""Pruning for the Optuna sweeper: report the monitored metric of every validation epoch to the
job's trial and stop the training when the pruner gives up on it."""

from __future__ import annotations

import logging
import os

import lightning.pytorch as L

from inat_lightning.models.metric_names import MONITOR
from inat_lightning.runs import trial_env

log = logging.getLogger(__name__)


class OptunaPruning(L.Callback):
    """Active only in a job launched by the Optuna sweeper (its trial in the environment); a
    no-op otherwise, so a trial's run folder can be resumed or re-run on its own.

    Args:
        monitor: the metric reported each epoch (the sweep's ``optimized_metric``).
    """

    def __init__(self, monitor: str = MONITOR) -> None:
        self.monitor = monitor
        self.trial = None
        if os.environ.get(trial_env.TRIAL):
            import optuna  # only in a search

            from inat_lightning.runs.optuna_sweeper import engine_kwargs, pruner_of

            url = os.environ[trial_env.STORAGE]
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url))
            name = os.environ[trial_env.STUDY]
            pruner = pruner_of(optuna.load_study(study_name=name, storage=storage))
            study = optuna.load_study(study_name=name, storage=storage, pruner=pruner)
            self.trial = optuna.Trial(study, int(os.environ[trial_env.TRIAL]))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (
            self.trial is None
            or trainer.sanity_checking
            or self.monitor not in trainer.callback_metrics
        ):
            return
        epoch = trainer.current_epoch
        value = float(trainer.callback_metrics[self.monitor])
        if trainer.is_global_zero:
            self.trial.report(value, step=epoch)
        prune = trainer.is_global_zero and self.trial.should_prune()
        prune = trainer.strategy.broadcast(prune)  # every rank stops together
        if prune:
            if trainer.is_global_zero:
                self.trial.set_user_attr("pruned_at_epoch", epoch)
            log.info("pruned by Optuna after epoch %d (%s=%.4f)", epoch, self.monitor, value)
            trainer.should_stop = True
