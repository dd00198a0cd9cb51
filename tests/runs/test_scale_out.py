"""Scale-out on Lightning's own engine: DDP on CPU, the GPU trainer switches, SLURM config."""

import contextlib
import json
import os
import pickle
import subprocess

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from inat_lightning.checks import check_train_config, check_trainer
from inat_lightning.config import ConfigError, build
from inat_lightning.models.classifier import Classifier
from inat_lightning.models.confusion import Confusion
from tests.helpers import warm
from tests.helpers.cli import REPO, SMALL, compose_config, run_cli, run_dirs


@pytest.mark.slow
def test_ddp_on_cpu_with_two_processes_syncs_metrics(tmp_path, shared_data_dir):
    res = run_cli(
        "train.py",
        *SMALL,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=4",
        tmp_path=tmp_path,
        data_dir=shared_data_dir,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    (run,) = run_dirs(tmp_path / "logs")  # the second process wrote into the same run
    log = (run / "train.log").read_text()
    assert "distributed_backend=gloo" in res.stdout + res.stderr + log
    assert "All distributed processes registered. Starting with 2 processes" in (
        res.stdout + res.stderr + log
    )
    summary = json.loads((run / "metrics.json").read_text())
    confusion = Confusion.from_record(summary["test_confusion"])
    # every test image counted exactly once across the two processes: no padding duplicates,
    # no half-sized matrix from one rank (the test split has an odd size here)
    n_test = summary["split_sizes"]["test"]
    assert n_test % 2 == 1
    assert confusion.total == n_test
    assert summary["metrics"]["test/acc"] == pytest.approx(confusion.accuracy(), abs=1e-6)
    # rank 0 alone drew the Grad-CAM galleries, without stalling the other process
    assert list((run / "gradcam" / "test").rglob("*.png"))


def test_gpu_preset_composes_with_mixed_precision_and_channels_last(tmp_path):
    cfg = compose_config("train", tmp_path, "experiment=resnet101_gpu")
    check_train_config(cfg)
    assert cfg.model.depth == 101 and cfg.data.image_size == 224
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"
    assert cfg.model.channels_last is True
    assert cfg.data.split.ratios == [0.7, 0.15, 0.15]
    assert cfg.model.scheduler._target_.endswith("ReduceLROnPlateau")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without GPU")
def test_gpu_trainer_without_gpu_is_a_config_error_before_any_work(tmp_path):
    cfg = compose_config("train", tmp_path, "trainer=gpu")
    with pytest.raises(ConfigError, match="^trainer"):
        build(cfg.trainer, "trainer")


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_preset_runs_with_bf16_channels_last_and_compile(tmp_path, shared_data_dir):
    res = run_cli(
        "train.py",
        "experiment=resnet101_gpu",
        *SMALL,
        "data.num_workers=2",
        "model.compile=true",
        "debug=fast_dev_run",
        "trainer.accelerator=gpu",
        tmp_path=tmp_path,
        data_dir=shared_data_dir,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    assert "bf16" in res.stdout + res.stderr


def test_sync_batchnorm_on_cpu_is_refused(tmp_path):
    cfg = compose_config(
        "train", tmp_path, "trainer=ddp", "trainer.accelerator=cpu", "trainer.sync_batchnorm=true"
    )
    trainer = build(cfg.trainer, "trainer", logger=False, enable_checkpointing=False)
    with pytest.raises(ConfigError, match=r"trainer\.sync_batchnorm"):
        check_trainer(trainer, cfg)


def test_compile_and_channels_last_switches_keep_checkpoints_plain():
    torch.manual_seed(0)
    plain = Classifier(3, depth=18)
    fast = Classifier(3, depth=18, channels_last=True, compile=True, compile_backend="eager")
    fast.load_state_dict(plain.state_dict())  # same keys: no "_orig_mod." from the compiled copy
    assert fast.state_dict().keys() == plain.state_dict().keys()
    assert fast.net.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 32, 32)
    plain.eval(), fast.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-4)
    assert fast._compiled and not plain._compiled


def test_slurm_launcher_config_follows_the_trainer(tmp_path):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "hydra/launcher=slurm",
                "trainer=ddp",
                "trainer.devices=4",
                "trainer.num_nodes=2",
                "hydra.launcher.partition=gpu",
            ],
            return_hydra_config=True,
        )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"] == "hydra_plugins.inat_lightning_launcher.WatchedSlurmLauncher"
    assert launcher["tasks_per_node"] == 4 and launcher["gpus_per_node"] == 4
    assert launcher["nodes"] == 2 and launcher["partition"] == "gpu"
    assert launcher["name"] == "inat-train"  # in squeue, not "cli"
    for cpu in (["trainer.accelerator=cpu"], ["trainer=cpu"]):  # a CPU partition: no GPU asked
        with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
            cfg = compose(
                "train", overrides=["hydra/launcher=slurm", *cpu], return_hydra_config=True
            )
        assert OmegaConf.to_container(cfg.hydra.launcher, resolve=True)["gpus_per_node"] == 0


def test_how_often_a_sweep_reads_slurm_states_is_a_checked_setting(monkeypatch):
    from inat_lightning.runs import slurm

    for name, read, default, low in (
        (slurm.POLL_ENV, slurm.poll_seconds, 60, "0"),  # submitit's own default
        (slurm.RESULT_WAIT_ENV, slurm.result_wait_seconds, 15, "-1"),  # 0: no wait
    ):
        monkeypatch.delenv(name, raising=False)
        assert read() == default
        monkeypatch.setenv(name, "5")
        assert read() == 5
        for bad in (low, "2.5", "soon"):
            monkeypatch.setenv(name, bad)
            with pytest.raises(ValueError, match=rf"^{name}='{bad}': must be a whole number"):
                read()
    monkeypatch.setenv(slurm.RESULT_WAIT_ENV, "0")
    assert slurm.result_wait_seconds() == 0


@pytest.mark.parametrize("quiet", [False, True])
def test_in_a_job_only_the_main_process_acts_on_the_time_limit_signal(tmp_path, quiet):
    """Slurm signals every process of a job, DataLoader workers included (two: the default).
    Without the guard a worker runs the job's handler (submitit's checkpoint-and-requeue) itself:
    the probe shows it does here, so the guarded run proves the guard, not a quiet platform."""
    marker = tmp_path / "handled.txt"
    argv = ["-m", "tests.helpers.signal_probe", *(["--quiet"] if quiet else []), str(marker)]
    res = warm.run(argv, cwd=REPO, env=dict(os.environ), timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    said = json.loads(res.stdout.strip().splitlines()[-1])
    assert said["items"] == list(range(8))  # no worker died: every item was read
    pids = [int(p) for p in marker.read_text().split()]
    workers = [p for p in pids if p != said["main"]]
    assert pids.count(said["main"]) == 1  # the job's own process still handles its signal
    assert len(workers) == (0 if quiet else 8)


@pytest.mark.parametrize(
    "scontrol, marked",
    [
        (None, True),  # requeued
        (RuntimeError("DataLoader worker (pid 7) exited unexpectedly"), True),  # Slurm's SIGTERM
        (subprocess.CalledProcessError(1, "scontrol"), False),  # not requeued: the job is over
    ],
)
def test_a_job_stopped_for_its_requeue_is_told_from_one_that_failed(monkeypatch, scontrol, marked):
    """Requeuing stops the job's step (SIGTERM to all: the loader workers die, and the trainer
    may say so while ``scontrol requeue`` still runs): the job marks that it asked for its
    requeue, so the launcher does not report it failed; a requeue that failed is no mark."""
    pytest.importorskip("submitit")
    from submitit.slurm import slurm

    from inat_lightning.runs import job_signals

    def check_call(*args, **kwargs):
        if scontrol is not None:
            raise scontrol

    monkeypatch.setattr(job_signals, "_requeued", False)
    monkeypatch.setattr(slurm.SlurmJobEnvironment, "_requeue", slurm.SlurmJobEnvironment._requeue)
    monkeypatch.setattr(slurm.subprocess, "check_call", check_call)
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    job_signals.note_requeue()
    assert not job_signals.requeued()
    with contextlib.suppress(RuntimeError, subprocess.CalledProcessError):  # as it came
        slurm.SlurmJobEnvironment()._requeue(2)
    assert job_signals.requeued() is marked


def test_a_slurm_jobs_callbacks_can_be_pickled_while_they_hold_their_folder(tmp_path):
    """A job requeues itself by pickling its launcher, Hydra's callbacks included: a callback
    holding the run folder's lock must still pickle (without its lock)."""
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from inat_lightning.runs.run_lock import RunFolderLock
    from inat_lightning.runs.trial_report import TrialReport

    job = OmegaConf.create({"hydra": {"mode": RunMode.MULTIRUN, "runtime": {"output_dir": ""}}})
    job.hydra.runtime.output_dir = str(tmp_path / "0_job")
    lock = RunFolderLock()
    lock.on_job_start(job)
    assert lock._lock is not None and lock._lock.is_locked
    again = pickle.loads(pickle.dumps([lock, TrialReport()]))
    assert again[0]._lock is None
    lock.on_job_end(job)
