"""Shared fixtures: tiny generated datasets and one short real training run. Helpers live in
``tests/helpers/``. ``make test`` runs the suite in pytest-xdist workers (``-n 2``): each gets
its share of the cores for torch, and the slow tests go first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from inat_lightning.data.synthetic import SyntheticSpecies
from tests.helpers.cli import SMALL, run_cli, run_dirs


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, this worker's torch and every process it starts (``OMP_NUM_THREADS``)
    use ``cores // workers`` threads: two workers whose torch each spun a thread per core would
    contend for the cores (measured: several times slower), and one thread per process computes
    small models on a core as fast. A value set by the user is kept."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
        if "torch" in sys.modules:  # imported already: it read the variable at import
            sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first (each file keeps its order): the workers then end together, not
    one of them on a minute-long test started last."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory) -> Path:
    """A ``paths.data_dir`` shared by CLI tests, so the synthetic dataset is generated once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def short_training(tmp_path_factory, shared_data_dir) -> tuple[Path, subprocess.CompletedProcess]:
    """One real 2-epoch ``train.py`` run (Grad-CAM every epoch), shared by the CLI tests."""
    tmp = tmp_path_factory.mktemp("short_training")
    res = run_cli(
        "train.py",
        *SMALL,
        "trainer.max_epochs=2",
        "seed=1",
        "data.crop_ratio=0.75",  # a non-default preprocessing (32 px is one too)
        "callbacks.gradcam.every_n_epochs=1",
        tmp_path=tmp,
        data_dir=shared_data_dir,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    (run,) = run_dirs(tmp / "logs")
    return run, res


@pytest.fixture(scope="session")
def short_evaluation(tmp_path_factory, short_training, shared_data_dir) -> tuple[Path, Path]:
    """``evaluate.py`` run for real on the short training's best checkpoint: ``(run, out)``."""
    run, _ = short_training
    tmp = tmp_path_factory.mktemp("short_evaluation")
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
    return run, out


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory) -> Path:
    """A small synthetic-species dataset (8 species, ~20 observations each, 48 px), made once."""
    root = tmp_path_factory.mktemp("synthetic") / "tiny"
    SyntheticSpecies(observations_per_species=20, image_size=48, seed=3).generate(
        root, progress=False
    )
    return root
