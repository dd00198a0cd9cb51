"""The Hydra entry points: ``train.py``, ``evaluate.py``, ``predict.py`` and ``scrape.py`` call
these, and so do the console scripts ``inat-train``, ``inat-evaluate``, ``inat-predict`` and
``inat-scrape`` that ``pip install`` puts beside Python (and ``python -m inat_lightning.cli
<task>``). The configs travel in the package (:data:`~inat_lightning.config.CONF`), so an
installed command works from any folder; a user's own folder of configs joins them with
Hydra's ``--config-dir`` (or ``hydra.searchpath``). The task is imported only when it runs, so
``--help``, ``--version`` and ``--cfg job`` answer without loading torch."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from inat_lightning import __version__
from inat_lightning.config import CONF, run_cli
from inat_lightning.runs.resolvers import register as register_resolvers
from inat_lightning.runs.resume import resume_argv

register_resolvers()  # ${inat.run_name:} and the others, in this process and its jobs

#: the folder ``paths.root_dir`` (data/, logs/) defaults to: ``conf/paths/default.yaml``
ROOT_ENV = "INAT_LIGHTNING_ROOT"


def clone_root(script: str) -> Path | None:
    """The clone a script belongs to (``<clone>/train.py`` beside ``conf/`` and
    ``pyproject.toml``), else ``None`` (an installed command such as ``inat-train``)."""
    path = Path(script).resolve()
    home = path.parent
    if path.suffix == ".py" and (home / "conf").is_dir() and (home / "pyproject.toml").is_file():
        return home
    return None


def anchor_root(script: str) -> None:
    """``python <clone>/train.py`` keeps its data and runs in the clone from whatever folder it
    is started (a Slurm submission from a home folder reuses the clone's data instead of
    generating it again beside the user), as lightning-hydra-template's scripts do; an
    installed command works in the current folder. ``$INAT_LIGHTNING_ROOT`` or
    ``paths.root_dir=...`` choose another place."""
    home = clone_root(script)
    if home is not None:
        os.environ.setdefault(ROOT_ENV, str(home))


def _entry(config_name: str, task: str) -> Callable[[], Any]:
    """A Hydra main for ``conf/<config_name>.yaml`` running ``task`` (``module:function``)."""
    if "--version" in sys.argv[1:]:
        print(f"inat-lightning {__version__}")
        sys.exit(0)
    anchor_root(sys.argv[0])
    if not CONF.is_dir():
        sys.exit(f"inat-lightning: the package has no configs at {CONF}: reinstall it")

    @hydra.main(version_base="1.3", config_path=str(CONF), config_name=config_name)
    def main(cfg: DictConfig) -> Any:
        module, name = task.split(":")
        return run_cli(getattr(importlib.import_module(module), name), cfg)

    return main


def train() -> Any:
    """``train.py`` / ``inat-train``: ``resume=<run dir>`` becomes that run's overrides first."""
    sys.argv = run_cli(resume_argv, sys.argv)  # a refused run folder: one line, status 2
    return _entry("train", "inat_lightning.training:train")()


def evaluate() -> Any:
    """``evaluate.py`` / ``inat-evaluate``."""
    return _entry("evaluate", "inat_lightning.evaluation:evaluate")()


def predict() -> Any:
    """``predict.py`` / ``inat-predict``."""
    return _entry("predict", "inat_lightning.prediction:predict")()


def scrape() -> Any:
    """``scrape.py`` / ``inat-scrape``."""
    return _entry("scrape", "inat_lightning.scrape.scraper:scrape")()


def shards() -> Any:
    """``python -m inat_lightning.shards build`` / ``inat-shards``: a dataset as shards."""
    return _entry("shards", "inat_lightning.shards:build")()


#: ``python -m inat_lightning.cli <task> [overrides]``: the tasks by name
TASKS = {
    "train": train,
    "evaluate": evaluate,
    "predict": predict,
    "scrape": scrape,
    "shards": shards,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in TASKS:
        sys.exit(f"usage: python -m inat_lightning.cli {{{','.join(TASKS)}}} [overrides]")
    chosen = TASKS[sys.argv.pop(1)]
    chosen()
