"""Shared fixtures: tiny generated datasets, and a helper to run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict
from PIL import Image

from inat_lightning.data.synthetic import SyntheticSpecies

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory) -> Path:
    """A ``paths.data_dir`` shared by CLI tests, so the synthetic dataset is generated once."""
    return tmp_path_factory.mktemp("data")


def run_dirs(log_dir: Path) -> list[Path]:
    """Run folders (those holding a .hydra folder) under a log dir."""
    return sorted(p.parent for p in log_dir.rglob(".hydra"))


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


@pytest.fixture(scope="session")
def short_training(tmp_path_factory, shared_data_dir) -> tuple[Path, subprocess.CompletedProcess]:
    """One real 2-epoch ``train.py`` run (Grad-CAM every epoch), shared by the CLI tests."""
    tmp = tmp_path_factory.mktemp("short_training")
    res = run_cli(
        "train.py",
        *SMALL,
        "trainer.max_epochs=2",
        "seed=1",
        "callbacks.gradcam.every_n_epochs=1",
        tmp_path=tmp,
        data_dir=shared_data_dir,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    (run,) = run_dirs(tmp / "logs")
    return run, res


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory) -> Path:
    """A small synthetic-species dataset (8 species, ~20 observations each, 48 px), made once."""
    root = tmp_path_factory.mktemp("synthetic") / "tiny"
    SyntheticSpecies(observations_per_species=20, image_size=48, seed=3).generate(
        root, progress=False
    )
    return root


def make_image_folder(root: Path, counts: dict[str, int], size: int = 24) -> Path:
    """A plain ImageFolder tree (no manifest) with ``counts[class]`` flat-coloured images."""
    for c, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (size, size), (40 * c % 255, 10 * i % 255, 128)).save(
                root / name / f"{i}.jpg"
            )
    return root


def run_cli(
    script: str, *overrides: str, tmp_path: Path, data_dir: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run an entry point for real, with logs (and data, unless ``data_dir``) under ``tmp_path``."""
    flags = [o for o in overrides if o.startswith("-")]  # e.g. -m: before the overrides
    cmd = [
        sys.executable,
        str(REPO / script),
        *flags,
        f"paths.log_dir={tmp_path / 'logs'}",
        f"paths.data_dir={data_dir or tmp_path / 'data'}",
        *(o for o in overrides if not o.startswith("-")),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


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


def tensorboard_tags(run_dir: Path) -> dict[str, dict[str, list]]:
    """Every scalar, image and tensor event under a run dir, by kind and tag."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, dict[str, list]] = {"scalars": {}, "images": {}, "tensors": {}}
    for f in sorted(run_dir.rglob("events.out.tfevents.*")):
        ea = EventAccumulator(str(f), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
        ea.Reload()
        for kind, get in (("scalars", ea.Scalars), ("images", ea.Images), ("tensors", ea.Tensors)):
            for tag in ea.Tags()[kind]:
                out[kind].setdefault(tag, []).extend(get(tag))
    return out
