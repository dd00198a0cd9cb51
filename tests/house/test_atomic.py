"""Files written while others may read them (an exported model, a checkpoint) appear whole or
not at all, a kill mid-write included."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from inat_lightning.atomic import replacing
from tests.helpers.cli import REPO

WRITER = """
import sys, time
from inat_lightning.atomic import replacing
with replacing(sys.argv[1]) as part:
    with open(part, "wb") as f:
        f.write(b"half of a new model")
        f.flush()
        print("writing", flush=True)
        time.sleep(60)
"""


def test_a_file_killed_mid_write_keeps_its_old_content(tmp_path):
    target = tmp_path / "model.pt2"
    target.write_bytes(b"the finished model")
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert target.read_bytes() == b"the finished model"  # never half a model under its name


def test_a_failed_write_leaves_the_old_file_and_no_part(tmp_path):
    target = tmp_path / "model.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), replacing(target) as part:
        part.write_text("new, but")
        raise RuntimeError("the export failed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["model.json"]
    t0 = time.time()
    with replacing(target) as part:
        part.write_text("new")
    assert target.read_text() == "new" and target.stat().st_mtime >= t0 - 1
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]
