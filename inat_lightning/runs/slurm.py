"""The Slurm launcher of sweeps: Hydra's submitit launcher, with each job's fate reported and
job states that do not depend on Slurm's accounting database.

What a user sees: each job's Slurm id and log path as it is submitted; when the jobs end, one
line per failed job (its number, Slurm id, overrides, Slurm state and its one-line reason or
its log); ``slurm_jobs.csv`` in the sweep folder (what ``summary.md`` reads for each job's
state). A job whose task failed exits non-zero, so Slurm records it ``FAILED``, not
``COMPLETED``. Inside the job, forked children (DataLoader workers) ignore the time-limit
signal: only the job's main process checkpoints and requeues (:mod:`.job_signals`).

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

import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.override_parser.types import Override
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import DictConfig, OmegaConf
from submitit.core import logger
from submitit.core.core import Job
from submitit.core.utils import FailedJobError
from submitit.slurm import slurm

from inat_lightning.config import CONF, ConfigError
from inat_lightning.runs.job_signals import note_requeue, quiet_forked_children, requeued
from inat_lightning.runs.overrides import key_of, parse, quote
from inat_lightning.runs.resume import hydra_config_dirs, resumed_job
from inat_lightning.runs.slurm_jobs import DONE, JobFailed, JobOutcome, one_line, write_outcomes
from inat_lightning.runs.summary import job_number, write_summary

log = logging.getLogger(__name__)

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


#: the launcher settings a refused submission is reported with
REQUEST_KEYS = ("partition", "gpus_per_node", "tasks_per_node", "cpus_per_task", "mem_gb")
#: Slurm states of a job not yet ended (a failed task's process may still be exiting)
ACTIVE = ("PENDING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED", "UNKNOWN")
#: how long a failed job's final state is waited for once its result is written
FINAL_STATE_WAIT_S = 60


@dataclass
class Planned:
    """One job to submit: its ``overrides``, the sweep folder and number it is recorded under,
    and the overrides that ``name`` it in reports."""

    overrides: list[str]
    sweep_dir: Path
    number: int
    name: list[str]


class WatchedSlurmLauncher(SlurmLauncher):
    """Hydra's ``submitit_slurm`` launcher whose jobs are watched by
    :class:`SqueueFallbackWatcher` and reported one line each (``conf/hydra/launcher/slurm.yaml``
    selects it)."""

    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        """The job itself (on the cluster): the task; a failed one raises :class:`JobFailed`, so
        the job exits non-zero and Slurm says ``FAILED``."""
        quiet_forked_children()  # DataLoader workers leave the time-limit signal to this process
        note_requeue()
        ret = super().__call__(*args, **kwargs)
        if ret.status == JobStatus.FAILED and requeued():  # Slurm stopped it to requeue it
            sys.exit(-1)  # as submitit exits then: no result, the job starts again
        if ret.status == JobStatus.FAILED:
            raise JobFailed(one_line(ret._return_value))
        return ret

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> list[JobReturn]:
        if not isinstance(slurm.SlurmJob.watcher, SqueueFallbackWatcher):  # shared by all jobs
            slurm.SlurmJob.watcher = SqueueFallbackWatcher(delay_s=poll_seconds())
        slurm.SlurmJob._results_timeout_s = result_wait_seconds()  # submitit's class setting
        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        numbers = range(initial_job_idx, initial_job_idx + len(job_overrides))
        planned = [self._plan(list(o), n, sweep_dir) for o, n in zip(job_overrides, numbers)]
        try:
            jobs = self._submit([p.overrides for p in planned], numbers, sweep_dir)
        except FailedJobError as e:  # sbatch said no: nothing was submitted
            raise JobFailed(self._refusal(str(e))) from None
        for p, job in zip(planned, jobs):
            said = " ".join(p.name)  # already without Hydra's own
            log.info("#%d Slurm job %s [%s], log: %s", p.number, job.job_id, said, job.paths.stderr)
        ended = [_ended(job, p.number, p.name) for p, job in zip(planned, jobs)]
        for folder in dict.fromkeys(p.sweep_dir for p in planned):  # a resume: each job's own
            write_outcomes(folder, [o for p, o in zip(planned, ended) if p.sweep_dir == folder])
            write_summary(folder, self.config.get("optimized_metric"))
        failed = [o for o in ended if not o.ok]
        for o in failed:
            log.error(o.line())
        said = JobFailed(
            f"{len(failed)} of {len(ended)} Slurm jobs failed: one line each above; "
            f"every job's state in {planned[0].sweep_dir / 'summary.md'}"
        )
        return [
            job.results()[0]
            if o.ok
            else JobReturn(overrides=p.overrides, status=JobStatus.FAILED, _return_value=said)
            for job, o, p in zip(jobs, ended, planned)
        ]

    def _plan(self, overrides: list[str], number: int, sweep_dir: Path) -> Planned:
        """What to submit for one job of the sweep, and where it is recorded; a job given
        ``resume=<job dir>`` continues that job in its own folder, under its own number."""
        assert self.config is not None
        try:
            resumed = resumed_job(overrides, (CONF, *hydra_config_dirs(self.config)))
        except ConfigError as e:  # a bad run folder: before anything is submitted
            raise JobFailed(str(e)) from None
        if resumed is None:
            return Planned(overrides, sweep_dir, number, _own(overrides, self.config))
        continued, job_dir = resumed
        name = [f"resume={quote(job_dir.name)}"]
        if not (job_dir.parent / "multirun.yaml").is_file():  # a single run's folder, not a job
            return Planned(continued, sweep_dir, number, name)
        return Planned(continued, job_dir.parent, job_number(job_dir), name)

    def _refusal(self, said: str) -> str:
        """One line for a refused submission: sbatch's own words and the request it refused."""
        lines = [x.removeprefix("sbatch: error: ") for x in said.splitlines() if x.strip()]
        asked = {k: self.params.get(k) for k in REQUEST_KEYS if self.params.get(k) is not None}
        request = " ".join(f"hydra.launcher.{k}={v}" for k, v in asked.items())
        hint = ""
        if "gres" in said.lower() and self.params.get("gpus_per_node"):
            hint = " (a CPU partition: trainer.accelerator=cpu asks for no GPU)"
        return f"sbatch refused the jobs: {lines[-1] if lines else said}{hint}; asked: {request}"

    def _submit(
        self, job_overrides: Sequence[Sequence[str]], numbers: range, sweep_dir: Path
    ) -> list[Job]:
        """One Slurm job (an array task) per override list, as Hydra's submitit launcher
        submits them (its executor settings, its callable: this launcher)."""
        import submitit

        init_keys = {"submitit_folder", "max_num_timeout"}
        executor = submitit.AutoExecutor(
            cluster=self._EXECUTOR,
            folder=self.params["submitit_folder"],
            slurm_max_num_timeout=self.params["max_num_timeout"],
        )
        base = set(OmegaConf.structured(BaseQueueConf).keys())  # the rest are slurm_<key>
        executor.update_parameters(
            **{
                k if k in base else f"{self._EXECUTOR}_{k}": v
                for k, v in self.params.items()
                if k not in init_keys
            }
        )
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:  # a lab's shared folder: as Hydra's launcher does
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        state = Singleton.get_state()
        n = len(numbers)
        return executor.map_array(
            self,
            [list(o) for o in job_overrides],
            ["hydra.sweep.dir"] * n,
            list(numbers),
            [f"job_id_for_{i}" for i in numbers],
            [state] * n,
        )


def _own(overrides: Sequence[str], config: DictConfig) -> list[str]:
    """The overrides that tell a job from its sweep's others: the swept or searched keys'
    (all of them when there are none)."""
    task = parse(config.hydra.overrides.task)
    given = {key_of(o) for o in task}
    swept = {key_of(o) for o in task if o.is_sweep_override()}
    swept |= set((config.hydra.sweeper.get("params") or {}).keys())
    shown = shown_overrides(overrides)
    own = [o.input_line for o in shown if key_of(o) in swept or key_of(o) not in given]
    return own or [o.input_line for o in shown]


def shown_overrides(overrides: Sequence[str]) -> list[Override]:
    """A job's overrides fit to print and keep in a shared folder: not Hydra's own (the
    sweeper's ``+hydra.job.env_set.*`` carry a study's storage URL, its password included)."""
    return [o for o in parse(overrides) if not key_of(o).startswith("hydra")]


def _ended(job: Job, number: int, overrides: Sequence[str]) -> JobOutcome:
    """Wait for ``job``: what became of it (named by ``overrides``, those it was given alone)."""
    said, log_path = list(overrides), str(job.paths.stderr)
    error = job.exception()  # waits for the job's end; None when its task returned
    if error is None:
        return JobOutcome(number, job.job_id, DONE, said, "", log_path)
    return JobOutcome(number, job.job_id, final_state(job), said, _reason(error), log_path)


def final_state(job: Job, wait_s: float = FINAL_STATE_WAIT_S) -> str:
    """The job's Slurm state once it has left the queue (``FAILED``, ``CANCELLED``,
    ``TIMEOUT``, ``OUT_OF_MEMORY``...), read again until then, for ``wait_s`` at most."""
    deadline = time.monotonic() + wait_s
    while True:
        said = job.watcher.get_state(job.job_id, mode="force") or "UNKNOWN"
        state = said.split(" by ")[0]  # "CANCELLED by 1000": who cancelled is in sacct
        if state not in ACTIVE or time.monotonic() > deadline:
            return state
        time.sleep(2)


def _reason(error: Exception) -> str:
    """The task's one-line error from submitit's report of a failed job; else what submitit
    says first (a job that ended without a result: its state tells why)."""
    marker = f"{JobFailed.__module__}.{JobFailed.__name__}: "
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    said = [line.removeprefix(marker) for line in lines if line.startswith(marker)]
    if said:
        return said[-1]
    if "has not produced any output" in str(error):
        return "no result"
    return lines[0] if lines else type(error).__name__
