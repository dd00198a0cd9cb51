"""A run folder belongs to one run at a time: two ``predict.py`` (or ``evaluate.py``, or
resumed ``train.py``) runs given one ``hydra.run.dir`` would mix their outputs (one run's
predictions beside the other's config), and a sweep job resumed while it still runs (after a
dropped login) would share its checkpoints with itself. A Hydra callback
(``conf/hydra/default.yaml``) locks a run's folder before Hydra writes anything in it, and a
sweep job's folder when the job starts; the second run stops in one line naming the folder and
the holder."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from filelock import FileLock
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from inat_lightning.locks import Locked, hold

log = logging.getLogger(__name__)

LOCK_NAME = ".run.lock"
#: set in the other processes of one distributed run (they share its folder)
RANK_VARIABLES = ("LOCAL_RANK", "RANK", "SLURM_PROCID")


def other_rank() -> bool:
    """Whether this process is one of a distributed run's others (not its rank 0)."""
    return any((os.environ.get(k) or "0").strip() not in ("", "0") for k in RANK_VARIABLES)


class RunFolderLock(Callback):
    """Holds ``<run folder>/.run.lock`` for the run's (or the sweep job's) lifetime, not in a
    distributed run's other processes, which share its folder."""

    def __init__(self) -> None:
        self._lock: FileLock | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Without the live lock: a Slurm job pickles its launcher, Hydra's callbacks
        included, to requeue itself."""
        return {**self.__dict__, "_lock": None}

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._take(Path(str(config.hydra.run.dir)))

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:  # a single run took its folder already
            self._take(Path(str(config.hydra.runtime.output_dir)))

    def on_job_end(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN and self._lock is not None:
            self._lock.release()  # the sweep's next job in this process takes its own

    def _take(self, folder: Path) -> None:
        """Lock ``folder``, or stop this process in one line (Hydra turns a callback's
        exception into a warning: the exit is what stops the run)."""
        if other_rank():
            return
        folder.mkdir(parents=True, exist_ok=True)
        try:
            self._lock = hold(folder / LOCK_NAME, f"hydra.run.dir={folder}")
        except Locked as e:
            said = f"config error: {e}: give this run another folder"
            log.error(said)
            print(said, file=sys.stderr, flush=True)
            raise SystemExit(2) from None
