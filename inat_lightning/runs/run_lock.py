"""A run folder belongs to one run at a time: two ``predict.py`` (or ``evaluate.py``, or
resumed ``train.py``) runs given one ``hydra.run.dir`` would mix their outputs (one run's
predictions beside the other's config). A Hydra callback (``conf/hydra/default.yaml``) locks the
folder before Hydra writes anything in it; the second run stops in one line naming the folder
and the holder. A sweep's jobs each have a folder of their own."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from filelock import FileLock
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from inat_lightning.config import ConfigError, run_cli
from inat_lightning.locks import Locked, hold

LOCK_NAME = ".run.lock"
#: set in the other processes of one distributed run (they share its folder)
RANK_VARIABLES = ("LOCAL_RANK", "RANK", "SLURM_PROCID")


def _other_rank() -> bool:
    return any((os.environ.get(k) or "0").strip() not in ("", "0") for k in RANK_VARIABLES)


class RunFolderLock(Callback):
    """Holds ``<hydra.run.dir>/.run.lock`` for the run's lifetime (not in a distributed run's
    other processes, which share its folder)."""

    def __init__(self) -> None:
        self._lock: FileLock | None = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not _other_rank():  # Hydra turns a callback's exception into a warning: exit here
            run_cli(self._take, Path(str(config.hydra.run.dir)))

    def _take(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            self._lock = hold(folder / LOCK_NAME, f"hydra.run.dir={folder}")
        except Locked as e:
            raise ConfigError(f"{e}: give this run another hydra.run.dir") from None
