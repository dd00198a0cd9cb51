"""Running the project as a user does: the real entry points in a subprocess, or a config
composed in-process; the one list of overrides that makes a run tiny."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from tests.helpers import warm

REPO = Path(__file__).resolve().parents[2]

# an easy synthetic set (4 clearly distinct species) and a tiny model: seconds per epoch
SMALL = [
    "model=resnet18",
    "data.image_size=32",
    "data.num_workers=0",
    "data.batch_size=16",
    "data.synthetic.num_species=4",
    "data.synthetic.lookalikes=false",
    "data.synthetic.observations_per_species=100",
    "data.synthetic.image_size=48",
]
# SMALL, one short epoch, no figures: for runs whose metrics don't matter (sweeps, searches)
QUICK = [
    *SMALL,
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=3",
    "+trainer.limit_val_batches=2",
    "~callbacks.gradcam",
    "~callbacks.metric_figures",
]


def default_workers(overrides: list[str]) -> list[str]:
    """``overrides`` without ``data.num_workers``: the run loads with the default loader workers
    (processes of their own), as a user's does. The scale-out tests (DDP, Slurm) run so."""
    return [o for o in overrides if not o.startswith("data.num_workers=")]


def run_dirs(log_dir: Path) -> list[Path]:
    """Run folders (those holding a .hydra folder) under a log dir."""
    return sorted(p.parent for p in log_dir.rglob(".hydra"))


def cli_argv(
    script: str, overrides: tuple[str, ...], tmp_path: Path, data_dir: Path | None
) -> list[Path | str]:
    """``[script, flags..., paths..., overrides...]``: logs (and data, unless ``data_dir``) under
    ``tmp_path``; flags such as ``-m`` before the overrides."""
    flags = [o for o in overrides if o.startswith("-")]
    return [
        REPO / script,
        *flags,
        f"paths.log_dir={tmp_path / 'logs'}",
        f"paths.data_dir={data_dir or tmp_path / 'data'}",
        *(o for o in overrides if not o.startswith("-")),
    ]


def run_cli(
    script: str, *overrides: str, tmp_path: Path, data_dir: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run an entry point for real, in a process of its own (a warm fork: ``warm.py``), with
    logs (and data, unless ``data_dir``) under ``tmp_path``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    argv = cli_argv(script, overrides, tmp_path, data_dir)
    return warm.run(argv, cwd=REPO, env=env, timeout=timeout)


def start_cli(
    script: str,
    *overrides: str,
    tmp_path: Path,
    data_dir: Path | None = None,
    env: dict[str, str] | None = None,
) -> multiprocessing.Process:
    """:func:`run_cli` in the background: stdout to ``tmp_path/out.log``, stderr to
    ``tmp_path/err.log``; ``env`` adds to this process's environment."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    argv = cli_argv(script, overrides, tmp_path, data_dir)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    return warm.start(argv, cwd=REPO, env=env, out=out, err=err)


def compose_config(
    name: str, tmp_path: Path, *overrides: str, out: Path | None = None
) -> DictConfig:
    """Compose a primary config in-process (no subprocess), with paths under ``tmp_path`` and the
    run's output dir ``out`` (default ``tmp_path/out``)."""
    out = out or tmp_path / "out"
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            name,
            overrides=[
                f"paths.log_dir={tmp_path}/logs",
                f"paths.data_dir={tmp_path}/data",
                *overrides,
            ],
        )
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)  # no Hydra runtime in compose()
        if "run_name" in cfg:
            cfg.run_name = "test"
    out.mkdir(parents=True, exist_ok=True)
    return cfg


def start_train(log: Path, *args: str) -> multiprocessing.Process:
    """train.py in a process of its own, in the background, its output to ``log``; one torch
    thread (three run at once on two cores)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return warm.start([REPO / "train.py", *args], cwd=REPO, env=env, out=log)


def kill_at(proc: multiprocessing.Process, log: Path, line: str, timeout: float = 300) -> None:
    """``SIGKILL`` the process once its log shows ``line`` (whatever the machine's speed); an
    error if it ends or ``timeout`` passes first."""
    try:
        deadline = time.monotonic() + timeout
        while line not in log.read_text():
            assert proc.is_alive() and time.monotonic() < deadline, f"never logged {line!r}"
            time.sleep(0.05)
    finally:
        proc.kill()  # SIGKILL
        proc.join()
