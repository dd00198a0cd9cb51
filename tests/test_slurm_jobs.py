"""The record of a Slurm sweep's jobs (``slurm_jobs.csv``) and the summary that reads it: no
cluster needed, the launcher's real runs are in ``tests/test_slurm.py``."""

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
