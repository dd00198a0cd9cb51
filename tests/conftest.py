"""Shared fixtures: tiny generated datasets, and a helper to run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from inat_lightning.data.synthetic import SyntheticSpecies

REPO = Path(__file__).resolve().parents[1]


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
    script: str, *overrides: str, tmp_path: Path, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run an entry point for real, with logs and data under ``tmp_path``."""
    cmd = [
        sys.executable,
        str(REPO / script),
        f"paths.log_dir={tmp_path / 'logs'}",
        f"paths.data_dir={tmp_path / 'data'}",
        *overrides,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
