"""The record of a Slurm sweep's jobs (``slurm_jobs.csv``) and the summary that reads it: no
cluster needed, the launcher's real runs are in ``tests/runs/test_slurm.py``."""

from __future__ import annotations

import csv
import json

import pytest

from inat_lightning.runs.slurm_jobs import FILE, JobOutcome, read_outcomes, write_outcomes
from inat_lightning.runs.summary import collect, write_summary


def test_job_outcomes_merge_and_the_summary_lists_each_jobs_state(tmp_path):
    """A job that ended before Hydra made its folder (cancelled while pending) still has a
    row; a job reported again (resumed) replaces its row; a failed job says its state."""
    done = tmp_path / "0_lr=0.1"
    (done / ".hydra").mkdir(parents=True)
    (done / ".hydra" / "overrides.yaml").write_text("- model.optimizer.lr=0.1\n")
    (done / "metrics.json").write_text(json.dumps({"metrics": {"val/f1_macro": 0.5}}))
    write_outcomes(tmp_path, [JobOutcome(0, "7_0", "RUNNING", ["model.optimizer.lr=0.1"])])
    write_outcomes(
        tmp_path,
        [
            JobOutcome(0, "7_0", "COMPLETED", ["model.optimizer.lr=0.1"]),
            JobOutcome(1, "7_1", "CANCELLED", ["model.optimizer.lr=-5"], "", "/x/7_1_0_log.err"),
        ],
    )
    assert [o.state for o in read_outcomes(tmp_path)] == ["COMPLETED", "CANCELLED"]
    rows = collect(tmp_path)
    assert [(r["job"], r["status"], r["slurm"]) for r in rows] == [
        (0, "done", "7_0 COMPLETED"),
        (1, "failed: CANCELLED", "7_1 CANCELLED"),
    ]
    assert rows[1]["overrides"] == {"model.optimizer.lr": "-5"}
    table = write_summary(tmp_path, "val/f1_macro").read_text()
    assert "| 1 | -5 |" in table and "failed: CANCELLED | 7_1 CANCELLED |" in table
    line = read_outcomes(tmp_path)[1].line()
    assert line == "job 1 (Slurm 7_1, CANCELLED) [model.optimizer.lr=-5]: log: /x/7_1_0_log.err"


@pytest.mark.parametrize(
    "row",
    [
        {"job": "one"},  # not a number
        {"overrides": '"lr=1"'},  # not a list
        {"overrides": "[1, 2]"},  # not text
        {"overrides": "{not json"},
        {"extra": "column"},  # a column the launcher never writes
    ],
)
def test_a_tampered_job_record_row_is_left_out_not_trusted(tmp_path, row):
    good = {"job": "0", "slurm_id": "7_0", "state": "COMPLETED", "overrides": "[]"}
    good |= {"reason": "", "log": ""}
    bad = {**good, "job": "1", **row}
    with (tmp_path / FILE).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(bad))
        writer.writeheader()
        writer.writerows([{**good, **{k: "" for k in bad if k not in good}}, bad])
    kept = read_outcomes(tmp_path)
    assert [o.job for o in kept] == ([] if "extra" in row else [0])


def test_an_edited_record_that_hydra_cannot_read_is_left_out_of_the_summary(tmp_path):
    write_outcomes(tmp_path, [JobOutcome(3, "9_3", "FAILED", ["resume=0_lr=0.1,b=2"])])
    assert collect(tmp_path) == []  # no traceback after every job has ended


def test_a_jobs_reports_never_show_hydras_own_overrides():
    """The Optuna sweeper gives each job its study's storage URL (a password in it) through
    ``+hydra.job.env_set``: kept out of the lines printed and the files a lab shares."""
    pytest.importorskip("submitit")
    from inat_lightning.runs.slurm import shown_overrides

    given = ["+hydra.job.env_set.INAT_OPTUNA_STORAGE='mysql://u:secret@db/x'", "seed=1"]
    assert [o.input_line for o in shown_overrides([*given, "hydra/launcher=slurm"])] == ["seed=1"]


def test_a_sweep_job_whose_folder_a_live_run_holds_stops_in_one_line(tmp_path, capsys):
    """A job resumed while it still runs (after a dropped login): the second stops."""
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from inat_lightning.locks import hold
    from inat_lightning.runs.run_lock import LOCK_NAME, RunFolderLock

    folder = tmp_path / "0_lr=0.1"
    folder.mkdir()
    held = hold(folder / LOCK_NAME, "the running job")
    job = OmegaConf.create({"hydra": {"mode": RunMode.MULTIRUN, "runtime": {"output_dir": ""}}})
    job.hydra.runtime.output_dir = str(folder)
    with pytest.raises(SystemExit) as stopped:
        RunFolderLock().on_job_start(job)
    assert stopped.value.code == 2
    assert f"hydra.run.dir={folder} is in use by another process" in capsys.readouterr().err
    held.release()
    free = RunFolderLock()
    free.on_job_start(job)  # the folder is free again: the job takes it, then lets it go
    free.on_job_end(job)
    hold(folder / LOCK_NAME, "the next job").release()


def test_only_rank_0_of_a_job_speaks_for_its_trial(tmp_path, monkeypatch):
    """Every Slurm task of a DDP trial runs the job; the others' returns are not the trial's:
    with SLURM_PROCID=1 the report opens no storage (a bogus one here would fail)."""
    from omegaconf import OmegaConf

    from inat_lightning.runs import trial_env
    from inat_lightning.runs.trial_report import TrialReport

    env = {trial_env.STORAGE: "nope://", trial_env.STUDY: "s", trial_env.TRIAL: "1"}
    job = OmegaConf.create({"hydra": {"job": {"env_set": env}}})
    monkeypatch.setenv("SLURM_PROCID", "1")
    report = TrialReport()
    report.on_job_start(job)
    report.on_job_end(job, job_return=None)
    monkeypatch.setenv("SLURM_PROCID", "0")
    with pytest.raises(Exception, match="nope"):  # rank 0 does open it
        TrialReport().on_job_start(job)
