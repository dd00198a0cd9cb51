"""Installed, not cloned: the built wheel in a fresh virtual environment outside the clone runs
``inat-train``, ``inat-evaluate`` and ``inat-predict`` from any folder, and a lab's own project
(``examples/my_lab``: its own ``conf/`` with a data option and an experiment, its own data
module and callback by ``_target_``, its backbone and CAM method by entry points) extends it,
while a run folder still chooses no code.

The fresh environment gets the wheels with ``pip install --no-deps --no-index``; the third-party
dependencies (torch and the rest, hundreds of MB) come from this test's own environment by a
``.pth`` line, so what is proven is that the *project* needs nothing of the clone. That ``.pth``
adds a folder to ``sys.path`` without running its ``.pth`` files, so this environment's editable
install of the clone stays out of the fresh one (asserted)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inat_lightning import __version__
from tests.helpers.cli import REPO

pytestmark = pytest.mark.slow
#: what a build of the clone leaves out: made by the commands, not sources (at the top only:
#: ``inat_lightning/data`` is a package)
MADE = {".venv", ".git", "data", "logs", "build", "dist", "site", ".pytest_cache", ".ruff_cache"}


def _skipped(folder: str, names: list[str]) -> set[str]:
    top = (
        {n for n in names if n in MADE}
        if Path(folder) in (REPO, *REPO.glob("examples/*"))
        else set()
    )
    return top | {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}


def _run(cmd: list, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=600,
        env={k: v for k, v in (env or os.environ).items() if k not in ("PYTHONPATH",)},
    )  # fmt: skip
    return done


def _ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-4000:])
    return done.stdout + done.stderr


def wheel(source: Path, out: Path, work: Path) -> Path:
    """The wheel of the project at ``source``, built from a copy (a build writes ``build/`` and
    ``*.egg-info`` beside the sources)."""
    copy = work / "sources" / source.name
    shutil.copytree(source, copy, symlinks=True, ignore=_skipped)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    _ok(_run([*cmd, "-w", out, copy], work))
    (found,) = out.glob("*.whl")
    return found


def fresh_env(where: Path, wheels: list[Path]) -> Path:
    """A new virtual environment with ``wheels`` installed; returns its ``bin`` folder."""
    _ok(_run([sys.executable, "-m", "venv", where], where.parent))
    purelib = Path(_ok(_run([where / "bin" / "python", "-c",
                             "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            where.parent)).strip())  # fmt: skip
    (purelib / "_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    cmd = [where / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
    _ok(_run([*cmd, *wheels], where.parent))
    return where / "bin"


def lab_photos(root: Path, rng: np.random.Generator) -> None:
    """Three species of 48 px photos, told apart by colour, and two 24 px thumbnails each (the
    lab's data module leaves those out)."""
    for k, colour in enumerate([(200, 40, 40), (40, 200, 40), (40, 40, 200)]):
        folder = root / f"Species {k}"
        folder.mkdir(parents=True)
        for i in range(14):
            side = 24 if i < 2 else 48
            noise = rng.integers(-30, 30, (side, side, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{k}_{i}.jpg")


def test_the_wheel_runs_from_any_folder_and_a_lab_extends_it_from_its_own_repo(tmp_path):
    wheels = [
        wheel(REPO, tmp_path / "dist", tmp_path),
        wheel(REPO / "examples" / "my_lab", tmp_path / "dist-lab", tmp_path),
    ]
    bin_ = fresh_env(tmp_path / "env", wheels)
    lab = tmp_path / "lab"  # the lab's own folder: its configs and data, nothing of the clone
    shutil.copytree(REPO / "examples" / "my_lab" / "conf", lab / "conf")
    lab_photos(lab / "data" / "my_birds", np.random.default_rng(0))
    env = {**os.environ, "INAT_LIGHTNING_ROOT": str(lab)}

    where = _ok(_run([bin_ / "python", "-c", "import inat_lightning as i; print(i.__file__)"], lab))
    assert where.strip().startswith(str(tmp_path / "env")), where  # the wheel, not the clone
    for script in ("inat-train", "inat-evaluate", "inat-predict", "inat-scrape", "inat-demo"):
        assert (
            _ok(_run([bin_ / script, "--version"], lab)).strip() == f"inat-lightning {__version__}"
        )

    # train with the lab's data option, experiment, data module and callback
    train = ["--config-dir", "conf", "data=my_birds", "experiment=my_lab"]
    out = _ok(_run([bin_ / "inat-train", *train, "hydra.run.dir=runs/train"], lab, env))
    run = lab / "runs" / "train"
    log = out + (run / "train.log").read_text()
    assert "my_lab: LabBirds keeps 36 of 42 photos" in log
    assert "`weights_only` was not set" not in log  # every checkpoint save says what it means
    with (run / "epoch_times.csv").open() as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["0", "1"]
    best = json.loads((run / "metrics.json").read_text())["best_checkpoint"]
    card = (Path(best).parent / "MODEL.md").read_text()
    assert "LabNet species classifier" in card  # the lab's backbone, by its entry point
    assert f"Written by inat-lightning {__version__}" in card

    # a shared run folder chooses no code: evaluated without the lab's data option, it is refused
    refused = _run([bin_ / "inat-evaluate", f"ckpt_path={best}", "hydra.run.dir=runs/e0"], lab, env)
    assert refused.returncode == 2 and "would build my_lab.data.LabBirds" in refused.stderr
    evaluate = ["--config-dir", "conf", "data=my_birds", f"ckpt_path={best}"]
    _ok(_run([bin_ / "inat-evaluate", *evaluate, "hydra.run.dir=runs/eval"], lab, env))
    found = json.loads((lab / "runs" / "eval" / "metrics.json").read_text())
    with (run / "splits.csv").open() as f:  # the lab's rule held: no thumbnail in any split
        split = list(csv.DictReader(f))
    assert len(split) == 36 and not any(r["path"].endswith(("_0.jpg", "_1.jpg")) for r in split)
    tested = sum(n for _, _, n in found["test_confusion"]["cells"])  # evaluated with LabBirds too
    assert tested == sum(r["split"] == "test" for r in split) > 0
    assert (lab / "runs" / "eval" / "report.md").is_file()

    # predict, explained by the lab's CAM method (an entry point of its package)
    photos = lab / "data" / "my_birds" / "Species 1"
    predict = [f"ckpt_path={best}", f"inputs={photos}", "cam.method=LabCAM"]
    _ok(_run([bin_ / "inat-predict", *predict, "hydra.run.dir=runs/predict"], lab, env))
    with (lab / "runs" / "predict" / "predictions.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 14
    unknown = _run([bin_ / "inat-predict", *predict[:2], "cam.method=NoSuchCAM"], lab, env)
    assert unknown.returncode == 2 and "LabCAM" in unknown.stderr  # listed among the choices
