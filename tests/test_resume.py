"""Resume: ``resume=<run dir>`` continues a killed run in place, exactly."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from inat_lightning.config import ConfigError, check_train_config
from inat_lightning.resume import resume_argv
from tests.conftest import REPO, SMALL, compose_config, run_dirs


def saved_run(tmp_path, overrides):
    run = tmp_path / "logs" / "train" / "runs" / "0_a=1,b=2"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    return run


def test_resume_argv_restores_the_runs_overrides_and_folder(tmp_path):
    run = saved_run(tmp_path, ["model=resnet18", "seed=3", "+x=1", "resume=true"])
    argv = resume_argv(["train.py", f"resume={run}", "seed=4"])
    # the run's overrides, then this command's (they win), then the run's own folder
    assert argv == [
        "train.py",
        "model=resnet18",
        "+x=1",
        "seed=4",
        f"hydra.run.dir='{run}'",
        "resume=true",
    ]
    same = resume_argv(["train.py", "resume=true", f"hydra.run.dir={run}"])
    assert same[-2:] == [f"hydra.run.dir='{run}'", "resume=true"] and "seed=3" in same
    # a sweep job's TensorBoard run keeps its name
    (run / "tensorboard" / "seed=3,model=resnet18").mkdir(parents=True)
    swept = resume_argv(["train.py", f"resume={run}"])
    assert swept[-1] == "run_name='seed=3,model=resnet18'"
    for untouched in (["train.py", "seed=1"], ["train.py", "resume=false"]):
        assert resume_argv(untouched) == untouched


def test_resume_without_a_checkpoint_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"resume=True: no checkpoints/last\.ckpt"):
        check_train_config(compose_config("train", tmp_path, "resume=true"))
    with pytest.raises(ConfigError, match=r"resume=/no/such/run: not a run folder"):
        check_train_config(compose_config("train", tmp_path, "resume=/no/such/run"))


def last_epoch(run) -> int:
    ckpt = run / "checkpoints" / "last.ckpt"
    return torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_result(tmp_path, shared_data_dir):
    overrides = [
        *SMALL,
        "trainer.max_epochs=2",
        "+trainer.limit_train_batches=12",
        "trainer.deterministic=true",
        "seed=5",
        "~callbacks.gradcam",
        "~callbacks.metric_figures",
    ]
    paths = [f"paths.data_dir={shared_data_dir}"]
    killed_logs = tmp_path / "killed"
    cmd = [sys.executable, str(REPO / "train.py"), f"paths.log_dir={killed_logs}", *paths]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*cmd, *overrides], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 300
        while not list(killed_logs.rglob("last.ckpt")):
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.2)
        time.sleep(1.2)  # into epoch 1 (its 12 batches take ~4 s here)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (run,) = run_dirs(killed_logs)
    assert not (run / "metrics.json").exists()
    assert last_epoch(run) == 0, "killed too late: epoch 1 had finished"

    # the uninterrupted run and the resume, side by side (neither depends on timing)
    straight = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "train.py"),
            f"paths.log_dir={tmp_path / 'straight'}",
            *paths,
            *overrides,
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    resumed = subprocess.run(
        [sys.executable, str(REPO / "train.py"), f"resume={run}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert straight.wait(timeout=600) == 0, straight.stderr.read()[-3000:]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restoring states from the checkpoint" in resumed.stdout + resumed.stderr

    (reference,) = run_dirs(tmp_path / "straight")
    got = json.loads((run / "metrics.json").read_text())
    want = json.loads((reference / "metrics.json").read_text())
    assert got["metrics"] == want["metrics"]
    assert got["best"] == want["best"]
    assert got["test_confusion_matrix"] == want["test_confusion_matrix"]
    assert last_epoch(run) == 1
    # continued in place: one TensorBoard run, one run folder
    assert len(list((run / "tensorboard").iterdir())) == 1
