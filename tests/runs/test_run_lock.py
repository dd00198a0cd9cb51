"""One run per run folder: a second run given a folder another run holds stops in one line
before Hydra writes anything there (its outputs would mix with the first run's)."""

from __future__ import annotations

import os

import pytest

from inat_lightning.locks import hold
from inat_lightning.runs.run_lock import LOCK_NAME
from tests.helpers.cli import run_cli


@pytest.mark.parametrize("script", ["predict.py", "evaluate.py", "train.py"])
def test_a_run_folder_in_use_is_refused_before_anything_is_written(tmp_path, script):
    folder = tmp_path / "out"
    folder.mkdir()
    args = ("ckpt_path=missing.ckpt", f"hydra.run.dir={folder}")
    lock = hold(folder / LOCK_NAME, "held by the test")  # another live run holds it
    res = run_cli(script, *args, tmp_path=tmp_path, timeout=120)
    assert res.returncode != 0
    last = res.stderr.strip().splitlines()[-1]
    said = f"hydra.run.dir={folder} is in use by another process (pid {os.getpid()})"
    assert last == f"config error: {said}: give this run another folder"
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME, f"{LOCK_NAME}.pid"]
    lock.release()  # that run has ended: the folder is free again
    res = run_cli(script, *args, tmp_path=tmp_path, timeout=120)
    assert res.returncode != 0 and "in use by another process" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("config error: ")  # the next check
    assert (folder / ".hydra").is_dir()
