"""Resume: ``resume=<run dir>`` continues a killed run in place, exactly."""

import json
import multiprocessing
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from inat_lightning.config import ConfigError
from inat_lightning.runs.resume import hydra_config_dirs, resume_argv, resume_checkpoint
from tests.helpers.cli import REPO, SMALL, compose_config, kill_at, run_dirs, start_train
from tests.house.test_untrusted_files import small_checkpoint


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
        resume_checkpoint(compose_config("train", tmp_path, "resume=true"))
    with pytest.raises(ConfigError, match=r"resume=/no/such/run: not a run folder"):
        resume_checkpoint(compose_config("train", tmp_path, "resume=/no/such/run"))


def test_a_requeued_slurm_job_continues_from_its_folders_last_checkpoint(tmp_path, monkeypatch):
    cfg = compose_config("train", tmp_path)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert resume_checkpoint(cfg) is None  # requeued before its first checkpoint: from scratch
    last.parent.mkdir(parents=True)
    small_checkpoint(last)  # a genuine one: a file of other contents is refused when read
    assert resume_checkpoint(cfg) == str(last)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")  # the first start: a leftover is not resumed
    assert resume_checkpoint(cfg) is None
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    last.write_bytes(b"truncated")
    with pytest.raises(ConfigError, match="resume"):
        resume_checkpoint(cfg)


def last_epoch(run) -> int:
    ckpt = run / "checkpoints" / "last.ckpt"
    return torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"]


def finish(proc: multiprocessing.Process, log: Path) -> None:
    proc.join(timeout=600)
    assert proc.exitcode == 0, log.read_text()[-3000:]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_result(tmp_path, shared_data_dir):
    overrides = [
        f"paths.data_dir={shared_data_dir}",
        *SMALL,
        "trainer.max_epochs=2",
        "+trainer.limit_train_batches=12",
        "trainer.deterministic=true",
        "seed=5",
        "~callbacks.gradcam",
        "~callbacks.metric_figures",
        "callbacks.progress_bar.every_s=0",  # a progress line per batch (the log is no terminal)
    ]
    killed_logs = tmp_path / "killed"
    proc = start_train(tmp_path / "killed.log", f"paths.log_dir={killed_logs}", *overrides)
    kill_at(proc, tmp_path / "killed.log", "epoch 2/2 train: 3/12")  # a few batches into epoch 1
    (run,) = run_dirs(killed_logs)
    assert not (run / "metrics.json").exists()
    assert last_epoch(run) == 0, "killed too late: epoch 1 had finished"
    saved = tmp_path / "saved.ckpt"  # the in-place resume will overwrite last.ckpt
    shutil.copy(run / "checkpoints" / "last.ckpt", saved)

    # the uninterrupted run, the in-place resume and a ckpt_path resume, side by side
    # (none depends on timing)
    runs = {
        "straight": [f"paths.log_dir={tmp_path / 'straight'}", *overrides],
        "from_ckpt": [f"paths.log_dir={tmp_path / 'from_ckpt'}", *overrides, f"ckpt_path={saved}"],
        "resumed": [f"resume={run}"],
    }
    procs = {k: start_train(tmp_path / f"{k}.log", *args) for k, args in runs.items()}
    for k, proc in procs.items():
        finish(proc, tmp_path / f"{k}.log")

    want = json.loads((run_dirs(tmp_path / "straight")[0] / "metrics.json").read_text())
    for got_dir in (run, run_dirs(tmp_path / "from_ckpt")[0]):
        got = json.loads((got_dir / "metrics.json").read_text())
        assert got["metrics"] == want["metrics"], got_dir
        assert got["best"] == want["best"]
        assert got["test_confusion"] == want["test_confusion"]
    assert last_epoch(run) == 1
    # continued in place: one TensorBoard run, one run folder
    assert len(list((run / "tensorboard").iterdir())) == 1
    assert len(run_dirs(killed_logs)) == 1

    # killed after its last epoch, before it wrote its results: a resume trains nothing more
    # and reports the last epoch's metrics as the run had (a search reads its value there)
    (straight,) = run_dirs(tmp_path / "straight")
    (straight / "metrics.json").unlink()
    finish(start_train(tmp_path / "again.log", f"resume={straight}"), tmp_path / "again.log")
    again = json.loads((straight / "metrics.json").read_text())
    assert again["metrics"] == want["metrics"] and again["best"] == want["best"]


def test_a_multirun_resume_names_each_unfinished_job_of_a_sweep(tmp_path):
    """``-m resume=<sweep dir>`` becomes one job per unfinished job folder (names with ``=`` and
    ``,`` quoted for Hydra); a job folder resumes alone; a finished sweep or a folder that is
    neither is one line naming the key."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("{}\n")
    jobs = [sweep / f"{i}_seed={i},x=1" for i in range(3)]  # named by their overrides
    for i, job in enumerate(jobs):
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"seed={i}"]))
    (jobs[1] / "metrics.json").write_text("{}")
    argv = resume_argv(["train.py", "-m", "hydra/launcher=slurm", f"resume={sweep}"])
    assert argv[:3] == ["train.py", "-m", "hydra/launcher=slurm"]
    assert argv[3] == f"resume='{jobs[0]}','{jobs[2]}'"  # the finished job 1 is not rerun
    slurm = ["train.py", "-m", "hydra/launcher=slurm"]
    assert resume_argv([*slurm, f"resume={jobs[1]}"])[-1] == f"resume='{jobs[1]}'"
    (jobs[0] / "metrics.json").write_text("{}")
    (jobs[2] / "metrics.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"^resume=.*: all 3 jobs of this sweep have finished"):
        resume_argv([*slurm, f"resume={sweep}"])
    with pytest.raises(ConfigError, match=r"^resume=.*: not a run folder .* nor a sweep folder"):
        resume_argv([*slurm, f"resume={tmp_path}"])
    with pytest.raises(ConfigError, match=r"^resume=.*: add hydra/launcher=slurm"):
        resume_argv(["train.py", "-m", f"resume={sweep}"])  # the default launcher: refused
    # a job folder that is not there: quoted, so that Hydra reads it and the run names the key
    gone = f"{sweep}/9_seed=9,x=1"
    assert resume_argv(["train.py", f"resume={gone}"]) == ["train.py", f"resume='{gone}'"]


def test_a_launcher_reads_the_config_dirs_hydra_was_given(tmp_path):
    """The Slurm launcher resumes jobs of a lab's sweep with the ``--config-dir`` Hydra read
    (its runtime config sources from the command line), not the project's alone."""
    from omegaconf import OmegaConf

    sources = [
        {"path": "hydra.conf", "schema": "pkg", "provider": "hydra"},
        {"path": str(REPO / "conf"), "schema": "file", "provider": "main"},
        {"path": str(tmp_path), "schema": "file", "provider": "command-line"},
    ]
    cfg = OmegaConf.create({"hydra": {"runtime": {"config_sources": sources}}})
    assert hydra_config_dirs(cfg) == [tmp_path]
    assert hydra_config_dirs(OmegaConf.create({"hydra": {"runtime": {}}})) == []
