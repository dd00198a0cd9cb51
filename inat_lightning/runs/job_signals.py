"""A Slurm job's time-limit signal is its main process's business, not its children's.

Slurm delivers a job's signals (``--signal=USR2@<s>`` before the time limit) to every process
of the job step, the DataLoader workers included; a forked worker carries the main process's
Python handlers, so each worker would run submitit's "timed out: checkpoint and requeue"
handler itself: several requeue attempts, a clash over the checkpoint file (``A temporary saved
file already exists``), then a worker exiting under the trainer and a job nobody requeues.

:func:`quiet_forked_children` makes every process forked from the job's process ignore those
signals (``SIGTERM`` is left alone: PyTorch's workers handle it themselves). The main process
keeps its handlers, checkpoints and requeues once; its exit ends the workers.

Requeuing stops the job's step: Slurm sends every process ``SIGTERM``, so the workers die and the
trainer may raise "DataLoader worker exited unexpectedly" before the main process has finished
exiting. :func:`note_requeue` marks the moment the job asks Slurm for its requeue, so that such
an error is not reported as the job's failure (:func:`requeued`).
"""

from __future__ import annotations

import os
import signal
import subprocess
from types import FrameType

#: the signals that ask a job to save itself: submitit's time-limit signal (USR2) and
#: Lightning's auto-requeue signal (USR1)
REQUEUE_SIGNALS = (signal.SIGUSR2, signal.SIGUSR1)

_registered = False
_requeued = False


def _ignore(signum: int, frame: FrameType | None) -> None:
    """A Python handler that does nothing (an ``exec`` resets it to the default, where
    ``SIG_IGN`` would be inherited by the program run)."""


def _in_child() -> None:
    for signum in REQUEUE_SIGNALS:
        try:
            signal.signal(signum, _ignore)
        except ValueError:  # forked from a thread that is not the main one: nothing to guard
            return


def quiet_forked_children() -> None:
    """From now on, every process forked from this one ignores :data:`REQUEUE_SIGNALS`
    (registered once per process)."""
    global _registered
    if not _registered:
        os.register_at_fork(after_in_child=_in_child)
        _registered = True


def note_requeue() -> None:
    """From now on, :func:`requeued` tells whether this job has asked Slurm to requeue it:
    submitit's requeue (its job environment's ``_requeue``, behind this one name) sets the mark
    before it calls ``scontrol requeue`` (Slurm's SIGTERM may interrupt it once done) and clears
    it if the command failed."""
    from submitit.slurm.slurm import SlurmJobEnvironment

    original = SlurmJobEnvironment._requeue
    if getattr(original, "noted", False):
        return

    def _requeue(self: SlurmJobEnvironment, countdown: int) -> None:
        global _requeued
        _requeued = True
        try:
            original(self, countdown)
        except (OSError, subprocess.SubprocessError):  # not requeued: the job is over
            _requeued = False
            raise

    _requeue.noted = True  # type: ignore[attr-defined]
    SlurmJobEnvironment._requeue = _requeue  # type: ignore[method-assign]


def requeued() -> bool:
    """Whether this job has asked Slurm to requeue it (:func:`note_requeue`)."""
    return _requeued
