"""The Slurm launcher of sweeps: Hydra's submitit launcher, with job states that do not depend
on Slurm's accounting database.

submitit learns that a job ended from ``sacct``. On a cluster without accounting
(``AccountingStorageType=accounting_storage/none``, common on small lab clusters) ``sacct``
fails, the state stays ``UNKNOWN``, and a job that died without writing its result (killed,
out of memory, a node lost) is waited for forever. Here, when ``sacct`` cannot answer, the
states come from ``squeue`` (the controller itself): a job it no longer lists has ended, and
submitit then reports it with its log instead of waiting.

How often the states are read: at 2, 4, 8, 16... s after the last submission, then at most every
``INAT_LIGHTNING_SLURM_POLL_S`` seconds (environment; default 60, submitit's own). One ``sacct``
call reads every job of the sweep. A job that ended without its result file is waited for
``INAT_LIGHTNING_SLURM_RESULT_WAIT_S`` seconds more (default 15, submitit's own: a shared
filesystem may show the file late) before it is reported.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from typing import Any

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from submitit.core import logger
from submitit.slurm import slurm

#: the longest wait between two reads of the jobs' states, unless the environment says otherwise
POLL_S = 60
POLL_ENV = "INAT_LIGHTNING_SLURM_POLL_S"
#: how long an ended job's missing result file is waited for, unless the environment says otherwise
RESULT_WAIT_S = 15
RESULT_WAIT_ENV = "INAT_LIGHTNING_SLURM_RESULT_WAIT_S"


def env_seconds(name: str, default: int, minimum: int) -> int:
    """The environment variable ``name`` as a whole number of seconds >= ``minimum``, else
    ``default``; anything else is an error naming the variable."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < minimum:
        raise ValueError(f"{name}={text!r}: must be a whole number of seconds >= {minimum}")
    return int(text)


def poll_seconds() -> int:
    """``INAT_LIGHTNING_SLURM_POLL_S`` (>= 1), else :data:`POLL_S`."""
    return env_seconds(POLL_ENV, POLL_S, 1)


def result_wait_seconds() -> int:
    """``INAT_LIGHTNING_SLURM_RESULT_WAIT_S`` (>= 0), else :data:`RESULT_WAIT_S`."""
    return env_seconds(RESULT_WAIT_ENV, RESULT_WAIT_S, 0)


#: the state given to a job ``squeue`` no longer lists: ended, however (its result file, or
#: its absence, tells the rest)
GONE = "ENDED (no accounting)"


class SqueueFallbackWatcher(slurm.SlurmInfoWatcher):
    """submitit's job-state watcher; where ``sacct`` fails, ``squeue`` answers instead."""

    def update(self) -> None:
        command = self._make_command()  # sacct on the jobs not known to be finished
        if command is None:
            return
        self._num_calls += 1
        try:
            self._output = subprocess.check_output(command, stderr=subprocess.PIPE, timeout=60)
            self._info_dict.update(self.read_info(self._output))
        except (OSError, subprocess.SubprocessError):
            self._info_dict.update(self._from_squeue())
        self._last_status_check = time.time()
        for job_id in self._registered - self._finished:
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)

    def _from_squeue(self) -> dict[str, dict[str, str]]:
        """The state of each watched job as the controller lists it (array tasks one per
        line); :data:`GONE` for one it no longer lists."""
        try:
            out = subprocess.run(
                ["squeue", "-h", "-r", "--states=all", "-o", "%i|%T"],
                check=True,
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
        except (OSError, subprocess.SubprocessError) as e:
            logger.get_logger().warning(f"neither sacct nor squeue answered: {e}")
            return {}
        listed = dict(line.split("|", 1) for line in out.splitlines() if "|" in line)
        return {
            job_id: {"JobID": job_id, "State": listed.get(job_id, GONE)}
            for job_id in self._registered - self._finished
        }


class WatchedSlurmLauncher(SlurmLauncher):
    """Hydra's ``submitit_slurm`` launcher whose jobs are watched by
    :class:`SqueueFallbackWatcher` (``conf/hydra/launcher/slurm.yaml`` selects it)."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        if not isinstance(slurm.SlurmJob.watcher, SqueueFallbackWatcher):  # shared by all jobs
            slurm.SlurmJob.watcher = SqueueFallbackWatcher(delay_s=poll_seconds())
        slurm.SlurmJob._results_timeout_s = result_wait_seconds()  # submitit's class setting
        return super().launch(job_overrides, initial_job_idx)
