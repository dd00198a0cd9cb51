"""A search's trial result reaches its study from the job itself, not only from the sweep's
process: a Hydra callback (``conf/hydra/default.yaml``) active in the jobs the Optuna sweeper
launches with a storage (their trial named in ``hydra.job.env_set``; see :mod:`.trial_env`).

Why: the sweep's process may die while its Slurm jobs go on (a dropped SSH login sends it
``SIGHUP``). Its heartbeats stop with it, so re-running the command would find the trials stale,
mark them failed and run their parameters again, though the jobs finished. Here each job beats
for its own trial while it runs and, when its task ends, tells the study its value (or that it
was pruned or failed) and writes its folder's ``trial.json``; the sweep's process, if still
there, finds the trial told and records nothing twice. A job still waiting in Slurm's queue has
no heartbeat of its own: it stays the sweep process's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from inat_lightning.runs import trial_env
from inat_lightning.runs.job_signals import requeued
from inat_lightning.runs.run_lock import other_rank

log = logging.getLogger(__name__)


def _trial_of(config: DictConfig) -> tuple[Any, Any, int] | None:
    """The job's study, trial and heartbeat interval, when the Optuna sweeper launched it with a
    storage; else ``None`` (any other run: nothing to do, optuna not imported)."""
    env = config.hydra.job.get("env_set") or {}
    if not all(env.get(k) for k in (trial_env.STORAGE, trial_env.STUDY, trial_env.TRIAL)):
        return None
    import optuna

    from inat_lightning.runs.optuna_sweeper import engine_kwargs

    url = str(env[trial_env.STORAGE])
    storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url))
    study = optuna.load_study(study_name=str(env[trial_env.STUDY]), storage=storage)
    trial = optuna.Trial(study, int(env[trial_env.TRIAL]))
    return study, trial, int(env.get(trial_env.HEARTBEAT) or 0)


class TrialReport(Callback):
    """In a search's job: heartbeats for its trial while it runs, then the trial's result told
    to the study and written to ``trial.json``."""

    def __init__(self) -> None:
        self._heartbeat: Any = None
        self._trial: tuple[Any, Any] | None = None  # (study, trial), opened once per job

    def __getstate__(self) -> dict[str, Any]:
        """Without the live heartbeat and storage: a Slurm job pickles its launcher, Hydra's
        callbacks included, to requeue itself."""
        return {**self.__dict__, "_heartbeat": None, "_trial": None}

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        found = None if other_rank() else _trial_of(config)  # rank 0 speaks for the trial
        if found is None:
            return
        from inat_lightning.runs.optuna_adapter import storage_of, trial_id
        from inat_lightning.runs.optuna_sweeper import Heartbeat

        study, trial, interval = found
        self._trial = study, trial
        self._heartbeat = Heartbeat(storage_of(study), [trial_id(trial)], interval).__enter__()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if self._heartbeat is not None:
            self._heartbeat.__exit__(None, None, None)
            self._heartbeat = None
        found, self._trial = self._trial, None
        if found is None or requeued():  # a job stopped for its requeue goes on later
            return
        from inat_lightning.runs.optuna_sweeper import settle, write_trial_record

        study, trial = found
        state, value = settle(study, trial, job_return)
        write_trial_record(Path(config.hydra.runtime.output_dir), study, trial)
        log.info("trial %d told to its study: %s %s", trial.number, state.name.lower(), value)
