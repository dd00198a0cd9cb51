"""Shared fixtures: tiny generated datasets and one short real training run, made once per
session however many pytest-xdist workers run it (the first makes it under a lock, the others
reuse it). Helpers live in ``tests/helpers/``."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from inat_lightning.data.synthetic import SyntheticSpecies
from tests.helpers.cli import SMALL, run_cli, run_dirs

#: the longest test files (minutes, mostly waiting on subprocesses and Slurm), started first so
#: that pytest-xdist's workers (``make test``: whole files, in this order) end together
LONGEST_FIRST = ("test_slurm.py", "test_readme.py", "test_audit.py", "test_search.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each file keeps its own order


def session_root(tmp_path_factory) -> Path:
    """The folder every worker of this session sees (xdist gives each worker its own basetemp
    below it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def made_once(tmp_path_factory, name: str, make: Callable[[Path], Any]) -> Any:
    """``make(folder)`` once per session: its JSON-able result, made by the first worker to
    come under a lock and read back by the others (a failed ``make`` is retried by the next)."""
    root = session_root(tmp_path_factory)
    folder, done = root / name, root / f"{name}.json"
    with FileLock(str(root / f"{name}.lock")):
        if not done.is_file():
            folder.mkdir(exist_ok=True)
            result = make(folder)
            done.write_text(json.dumps(result))
    return json.loads(done.read_text())


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory) -> Path:
    """A ``paths.data_dir`` shared by CLI tests, so the synthetic dataset is generated once
    (the generation itself is locked)."""
    folder = session_root(tmp_path_factory) / "shared-data"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def short_training(tmp_path_factory, shared_data_dir) -> tuple[Path, subprocess.CompletedProcess]:
    """One real 2-epoch ``train.py`` run (Grad-CAM every epoch), shared by the CLI tests."""

    def make(tmp: Path) -> dict[str, Any]:
        res = train_briefly(tmp, shared_data_dir)
        (run,) = run_dirs(tmp / "logs")
        return {"run": str(run), "returncode": res.returncode, "out": res.stdout, "err": res.stderr}

    made = made_once(tmp_path_factory, "short_training", make)
    res = subprocess.CompletedProcess([], made["returncode"], made["out"], made["err"])
    return Path(made["run"]), res


def train_briefly(tmp: Path, data_dir: Path) -> subprocess.CompletedProcess:
    res = run_cli(
        "train.py",
        *SMALL,
        "trainer.max_epochs=2",
        "seed=1",
        "data.eval_crop_ratio=0.75",  # a non-default preprocessing (32 px is one too)
        "callbacks.gradcam.every_n_epochs=1",
        tmp_path=tmp,
        data_dir=data_dir,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    return res


@pytest.fixture(scope="session")
def short_evaluation(tmp_path_factory, short_training, shared_data_dir) -> tuple[Path, Path]:
    """``evaluate.py`` run for real on the short training's best checkpoint: ``(run, out)``."""
    run, _ = short_training

    def make(tmp: Path) -> str:
        best = json.loads((run / "metrics.json").read_text())["best_checkpoint"]
        res = run_cli(
            "evaluate.py",
            f"ckpt_path={best}",
            "data.batch_size=7",  # applied on top of the restored data config
            tmp_path=tmp,
            data_dir=shared_data_dir,
            timeout=300,
        )
        assert res.returncode == 0, res.stderr[-4000:]
        (out,) = run_dirs(tmp / "logs")
        return str(out)

    return run, Path(made_once(tmp_path_factory, "short_evaluation", make))


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory) -> Path:
    """A small synthetic-species dataset (8 species, ~20 observations each, 48 px), made once."""

    def make(folder: Path) -> str:
        SyntheticSpecies(observations_per_species=20, image_size=48, seed=3).generate(
            folder / "tiny", progress=False
        )
        return str(folder / "tiny")

    return Path(made_once(tmp_path_factory, "tiny_synthetic", make))
