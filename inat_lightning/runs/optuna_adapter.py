"""The private attributes of Optuna (and of Hydra's ``JobReturn``) the sweeper needs, behind one
adapter: when a release renames them, this file is the one to change. Tested with the Optuna
major pinned in ``pyproject.toml`` (the ``sweeps`` extra)."""

from __future__ import annotations

from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus


def trial_id(trial: optuna.Trial) -> int:
    """The storage's id of a trial (what heartbeats and a job's environment name)."""
    return trial._trial_id


def storage_of(study: optuna.Study) -> Any:
    """The study's storage (heartbeats, trials as the jobs left them)."""
    return study._storage


def record_heartbeat(study: optuna.Study, trial: optuna.Trial) -> None:
    storage_of(study).record_heartbeat(trial_id(trial))


def job_outcome(ret: JobReturn) -> tuple[Any, BaseException | None]:
    """``(value, None)`` for a completed job, ``(None, error)`` for a failed one (Hydra's
    ``return_value`` re-raises the error; the attribute holds it)."""
    if ret.status == JobStatus.COMPLETED:
        return ret._return_value, None
    return None, ret._return_value
