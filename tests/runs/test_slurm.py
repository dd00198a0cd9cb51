"""Sweeps on a real Slurm cluster: the single-node cluster with accounting that
``tests/cluster/slurm_up.sh`` brings up from Debian's packages (``make test`` runs it). Where it
could not (not root and no sudo, not Debian), these tests skip with its reason."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from inat_lightning.models.confusion import Confusion
from inat_lightning.runs.overrides import quote
from inat_lightning.runs.slurm import POLL_ENV, RESULT_WAIT_ENV
from tests.helpers.cli import QUICK, REPO, SMALL, default_workers, run_cli, run_dirs, start_cli

DUMMY = REPO / "tests" / "helpers" / "dummy_task.py"

# every job loads with the project's default loader workers: the requeue failed only with them
JOB_QUICK, JOB_SMALL = default_workers(QUICK), default_workers(SMALL)
STATUS = Path(os.environ.get("SLURM_STATUS_FILE", "/tmp/inat-lightning-slurm.status"))
# one CPU, no GPU, little memory per job: the test node has 2 cores
ON_THIS_NODE = [
    "hydra/launcher=slurm",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.timeout_min=10",
]
# the requeue test: the limit Slurm is told to signal the job before (70 s before its 10 minutes);
# the test sends that signal itself once the job has saved a checkpoint. Each of the first
# start's epochs sleeps 3 s, so it is still training then; requeued, it runs unslowed.
SIGNAL_BEFORE_LIMIT_S, EPOCHS, PAUSE_S = 70, 8, 3


def hangup_default() -> None:
    """In a child before it runs: SIGHUP's default action (terminate), whatever was inherited."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def dummy(tmp_path: Path, *overrides: str, node: tuple[str, ...] = tuple(ON_THIS_NODE)) -> list:
    """The dummy task's command line on this node (``node``: the launcher settings), logs and
    data under ``tmp_path``; flags such as ``-m`` among ``overrides`` come first."""
    flags = [o for o in overrides if o.startswith("-")]
    paths = [f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={tmp_path / 'data'}"]
    rest = [o for o in overrides if not o.startswith("-")]
    return [sys.executable, str(DUMMY), *flags, *node, *paths, *rest]


def cluster_problem() -> str | None:
    """Why the tests cannot use a cluster, or ``None`` when ``sinfo`` shows an idle node."""
    try:
        found = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        said = STATUS.read_text().strip() if STATUS.is_file() else "run tests/cluster/slurm_up.sh"
        return f"no Slurm cluster ({type(e).__name__}); {said}"
    if found.returncode != 0 or not any(s in found.stdout for s in ("idle", "mixed", "alloc")):
        said = STATUS.read_text().strip() if STATUS.is_file() else "run tests/cluster/slurm_up.sh"
        return f"no Slurm node up ({found.stderr.strip()[:200]}); {said}"
    return None


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(problem := cluster_problem()), reason=str(problem)),
]


@pytest.fixture(autouse=True)
def poll_often(monkeypatch):
    """The sweeps read their jobs' states every 3 s at most (60 by default): a job's end is seen
    within seconds, as a user watching a few short jobs would set it. The jobs write their results
    on this machine's own disk, which shows a file at once: no wait for a late result file."""
    monkeypatch.setenv(POLL_ENV, "3")
    monkeypatch.setenv(RESULT_WAIT_ENV, "0")


def summary_rows(logs: Path) -> list[dict]:
    (summary,) = logs.rglob("summary.csv")
    return list(csv.DictReader(summary.open()))


def test_a_three_job_sweep_from_a_fresh_clone_finishes_on_slurm(tmp_path, monkeypatch):
    """Three jobs start together on a data folder that does not exist yet: one generates the
    embedded data set, the others wait for it; all three train and the summary lists them."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # as a user's shell: torch would use all
    res = run_cli(
        "train.py",
        "-m",
        *ON_THIS_NODE,
        *JOB_QUICK,
        "model.optimizer.lr=0.1,0.03,0.01",
        tmp_path=tmp_path,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    rows = summary_rows(tmp_path / "logs")
    assert [r["status"] for r in rows] == ["done"] * 3
    assert sorted(r["model.optimizer.lr"] for r in rows) == ["0.01", "0.03", "0.1"]
    assert len(run_dirs(tmp_path / "logs")) == 3
    assert list((tmp_path / "logs").rglob(".submitit/*/*.out"))  # they ran as Slurm jobs
    for run in run_dirs(tmp_path / "logs"):  # as many torch threads as the job's CPUs
        assert "fit: 1 process(es) x 1 torch thread(s)" in (run / "train.log").read_text()


def sacct_state(job_id: str) -> str:
    said = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return said.stdout.split()[0] if said.stdout.split() else ""


def test_failed_jobs_are_reported_one_line_each_and_failed_in_slurm(tmp_path):
    """Two jobs of three fail on a bad value: the sweep names each (number, Slurm id, overrides,
    state, reason, log) in one line, without a traceback; Slurm records them FAILED; the summary
    lists every job's state."""
    t0 = time.monotonic()
    res = run_cli(
        "train.py",
        "-m",
        *ON_THIS_NODE,
        *JOB_QUICK,
        "model.optimizer.lr=0.1,-5,-7",
        "callbacks.resume_point.keep_after_fit=false",  # a sweep's retention setting
        tmp_path=tmp_path,
        timeout=600,
    )
    assert res.returncode != 0  # the sweep says a job failed
    assert time.monotonic() - t0 < 300  # no waiting forever on the failed jobs
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    rows = {r["model.optimizer.lr"]: r for r in summary_rows(tmp_path / "logs")}
    for number, lr in ((1, "-5"), (2, "-7")):
        slurm_id = rows[lr]["slurm"].split()[0]
        reason = f"ConfigError: model.optimizer (torch.optim.SGD): Invalid learning rate: {lr}"
        (line,) = [x for x in res.stderr.splitlines() if f"job {number} (Slurm {slurm_id}" in x]
        assert f"FAILED) [model.optimizer.lr={lr}]: {reason}; log: " in line
        assert Path(line.split("; log: ")[1]).is_file()  # the job's own log
        assert sacct_state(slurm_id) == "FAILED"  # not COMPLETED
        assert rows[lr]["status"] == "failed: FAILED"
    assert rows["0.1"]["status"] == "done" and rows["0.1"]["slurm"].endswith(" COMPLETED")
    done = tmp_path / "logs" / "train" / "multiruns"
    (ckpt,) = [p.name for p in done.glob(f"*/{rows['0.1']['run_dir']}/checkpoints/*.ckpt")]
    assert ckpt.startswith("epoch") and ckpt.endswith(".ckpt")  # the best one, not last.ckpt
    assert "failed: FAILED" in (tmp_path / "logs").rglob("summary.md").__next__().read_text()


def test_a_request_sbatch_refuses_is_one_line_naming_what_was_asked(tmp_path):
    """The default trainer (``accelerator=auto``) asks for one GPU per device; this cluster has
    none, so sbatch refuses: one line with sbatch's words, the request and what to change."""
    res = subprocess.run(
        dummy(tmp_path, "-m", node=tuple(o for o in ON_THIS_NODE if "gpus_per_node" not in o)),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode != 0
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    (line,) = [x for x in res.stderr.splitlines() if x.startswith("sbatch refused the jobs: ")]
    assert "Invalid generic resource (gres) specification" in line
    assert "trainer.accelerator=cpu" in line and "hydra.launcher.gpus_per_node=1" in line


def test_a_job_cancelled_by_hand_is_reported_cancelled_and_the_sweep_resumes_on_slurm(tmp_path):
    """``scancel`` while a job's loader workers run, after its first checkpoint: the sweep
    reports the job CANCELLED (what Slurm says), not the workers' deaths. Then ``-m
    resume=<sweep dir>`` (after a maintenance window) continues every unfinished job as a Slurm
    job, in its own folder (named with ``=`` and ``,``), from its last checkpoint."""
    two_epochs = [o for o in JOB_QUICK if not o.startswith("trainer.max_epochs=")]
    two_epochs.append("trainer.max_epochs=2")
    pause = ["+callbacks.pause._target_=tests.helpers.pause.Pause", "+callbacks.pause.every=batch"]
    sweep = start_cli(
        "train.py",
        "-m",
        *ON_THIS_NODE,
        *two_epochs,
        *pause,
        "+callbacks.pause.seconds=2",
        tmp_path=tmp_path,
    )
    logs = tmp_path / "logs"
    deadline = time.monotonic() + 300
    while not list(logs.rglob("checkpoints/last.ckpt")):  # epoch 1 running, its workers alive
        assert sweep.is_alive() and time.monotonic() < deadline, (tmp_path / "err.log").read_text()
        time.sleep(0.5)
    (submission,) = logs.rglob(".submitit/*/*_submission.sh")
    subprocess.run(["scancel", submission.parent.name], check=True, timeout=30)
    sweep.join(timeout=300)
    err = (tmp_path / "err.log").read_text()
    assert sweep.exitcode not in (0, None), err[-3000:]
    (line,) = [x for x in err.splitlines() if "job 0 (Slurm " in x]
    assert "CANCELLED) [" in line and "DataLoader" not in line
    (row,) = summary_rows(logs)
    assert row["status"] == "failed: CANCELLED"

    (sweep_dir,) = [p.parent for p in logs.rglob("multirun.yaml")]
    res = run_cli(
        "train.py",
        "-m",
        *ON_THIS_NODE,
        f"resume={sweep_dir}",
        *pause,
        "+callbacks.pause.seconds=0",  # this command's own settings win over the folder's
        tmp_path=tmp_path,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    (job,) = run_dirs(sweep_dir)  # continued in its own folder: no second one
    assert "resuming from" in (job / "train.log").read_text()
    assert json.loads((job / "metrics.json").read_text())["metrics"]
    (row,) = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    assert row["status"] == "done" and row["slurm"].endswith(" COMPLETED")


def test_an_optuna_search_runs_as_slurm_jobs_on_a_database_server(tmp_path):
    """The README's cluster search: trials as Slurm jobs (three at once), the study in MariaDB
    (the server slurm_up.sh started) through an SQLAlchemy URL; exactly ``n_trials`` trials,
    each parameter set distinct. The task is the dummy one: the scheduler and the storage are
    what is tested here."""
    optuna = pytest.importorskip("optuna")
    pytest.importorskip("pymysql")
    url = "mysql+pymysql://inat:inat@127.0.0.1/inat_optuna"
    study = f"slurm_{uuid.uuid4().hex[:12]}"  # the server outlives the test: a new study
    res = subprocess.run(
        dummy(
            tmp_path,
            "hparams_search=optuna_sgd",
            f"hydra.sweeper.storage={url}",
            f"hydra.sweeper.study_name={study}",
            "hydra.sweeper.n_trials=4",
            "hydra.sweeper.n_jobs=2",
        ),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    found = optuna.load_study(study_name=study, storage=url)
    complete = [t for t in found.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4
    assert len({tuple(sorted(t.params.items())) for t in complete}) == 4
    assert list((tmp_path / "logs").rglob(".submitit/*/*.out"))  # they ran as Slurm jobs


def test_a_search_whose_shell_died_keeps_its_finished_trials(tmp_path):
    """SIGHUP to a Slurm search's own process (a dropped SSH login) while its two trials run as
    jobs: the jobs go on, keep their trials alive and tell the study their values themselves;
    the same command run again at once finds both trials running, then done, and runs nothing
    again. Heartbeats every 2 s, stale after 6 s: without the jobs' own, the rerun would fail
    the trials and run their parameters again while the jobs still run."""
    optuna = pytest.importorskip("optuna")
    pytest.importorskip("pymysql")
    url = "mysql+pymysql://inat:inat@127.0.0.1/inat_optuna"
    study = f"hup_{uuid.uuid4().hex[:12]}"
    command = dummy(
        tmp_path,
        "hparams_search=optuna_sgd",
        f"hydra.sweeper.storage={url}",
        f"hydra.sweeper.study_name={study}",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.heartbeat_interval=2",
        "hydra.sweeper.grace_period=6",
    )
    env = {**os.environ, "DUMMY_TASK_SECONDS": "15"}
    with (tmp_path / "first.err").open("w") as err:
        # SIGHUP as a dropped login sends it: to a process that has not inherited "ignore it"
        # (as everything started under nohup does, a CI runner's make included)
        first = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=err, stderr=err, preexec_fn=hangup_default
        )
        deadline = time.monotonic() + 120
        while len(list((tmp_path / "logs").rglob("searches/*/*/.hydra"))) < 2:  # both started
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.5)
        first.send_signal(signal.SIGHUP)
        assert first.wait(timeout=30) != 0
    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    found = optuna.load_study(study_name=study, storage=url)
    assert [t.state.name for t in found.trials] == ["COMPLETE", "COMPLETE"]
    tasks = [p for p in (tmp_path / "logs").rglob(".submitit/*_*") if p.is_dir()]
    assert len(tasks) == 2  # the two array tasks of the first run; none run again
    for job_dir in (tmp_path / "logs").rglob("searches/*/*/.hydra"):  # the jobs' own records
        assert json.loads((job_dir.parent / "trial.json").read_text())["state"] == "complete"
    # the storage's password is in no line printed nor any table of the shared sweep folder
    (sweep,) = (tmp_path / "logs" / "train" / "searches").iterdir()
    tables = [p for p in sweep.iterdir() if p.suffix in (".csv", ".md", ".yaml")]
    said = again.stderr + (tmp_path / "first.err").read_text()
    assert "inat:inat@" not in said + "".join(t.read_text() for t in tables)


def test_a_ddp_job_over_two_slurm_tasks_counts_every_test_image_once(tmp_path):
    """One job, two Slurm tasks (CPU, gloo): Lightning reads the Slurm environment, the test
    confusion counts every test image once, and equals a single-process evaluation of the
    same checkpoint."""
    res = run_cli(
        "train.py",
        "-m",
        *ON_THIS_NODE,
        *JOB_QUICK,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",  # = hydra.launcher.tasks_per_node
        tmp_path=tmp_path,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    (run,) = run_dirs(tmp_path / "logs")
    logs = "".join(p.read_text() for p in (tmp_path / "logs").rglob(".submitit/*/*.err"))
    assert "All distributed processes registered. Starting with 2 processes" in logs
    trained = json.loads((run / "metrics.json").read_text())
    assert Confusion.from_record(trained["test_confusion"]).total == trained["split_sizes"]["test"]
    res = run_cli(
        "evaluate.py",
        f"ckpt_path={quote(trained['best_checkpoint'])}",  # a sweep job's folder: = and ,
        "callbacks=none",
        tmp_path=tmp_path / "eval",
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    (evaluated,) = run_dirs(tmp_path / "eval" / "logs")
    single = json.loads((evaluated / "metrics.json").read_text())
    assert single["test_confusion"] == trained["test_confusion"]


def test_a_job_signalled_before_its_time_limit_is_requeued_and_resumes_to_the_uninterrupted_result(
    tmp_path,
):
    """A job whose training outlasts its time limit: Slurm is told to signal it (``USR2``,
    ``signal_delay_s`` before the limit), the launcher requeues it (``max_num_timeout``), the job
    starts again in its folder and continues from its last checkpoint; its ``metrics.json``
    equals an uninterrupted local run's. The test sends the job Slurm's signal itself
    (``scancel --signal``), right after the job's first checkpoint: Slurm's own timer ticks
    every 30 s, so the moment it picks would be up to 30 s of waiting, early or late. The first
    start's epochs are made long in wall time by a sleeping callback, not by work."""
    training = [
        *JOB_SMALL,
        f"trainer.max_epochs={EPOCHS}",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
        "trainer.deterministic=true",
        "seed=5",
        "~callbacks.gradcam",
        "~callbacks.metric_figures",
    ]
    straight = start_cli(  # the reference, at the same time, on the same data folder
        "train.py",
        *training,
        tmp_path=tmp_path / "straight",
        data_dir=tmp_path / "data",
        env={"OMP_NUM_THREADS": "1"},  # as the job's one CPU gives it
    )
    sweep = start_cli(
        "train.py",
        "-m",
        *ON_THIS_NODE,
        f"hydra.launcher.signal_delay_s={SIGNAL_BEFORE_LIMIT_S}",
        *training,
        "+callbacks.pause._target_=tests.helpers.pause.Pause",
        f"+callbacks.pause.seconds={PAUSE_S}",
        tmp_path=tmp_path,
    )
    logs = tmp_path / "logs"
    deadline = time.monotonic() + 300
    while not list(logs.rglob("checkpoints/last.ckpt")):
        alive = sweep.is_alive() and time.monotonic() < deadline
        assert alive, (tmp_path / "err.log").read_text()[-3000:]  # read only on failure
        time.sleep(0.2)
    (submission,) = logs.rglob(".submitit/*/*_submission.sh")
    assert f"--signal=USR2@{SIGNAL_BEFORE_LIMIT_S}" in submission.read_text()  # what Slurm sends
    job_id = submission.parent.name
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)
    sweep.join(timeout=600)
    assert sweep.exitcode == 0, (tmp_path / "err.log").read_text()[-3000:]
    straight.join(timeout=600)
    assert straight.exitcode == 0, (tmp_path / "straight" / "err.log").read_text()[-3000:]
    (run,) = run_dirs(logs)
    said = "".join(p.read_text() for p in logs.rglob(".submitit/*/*.err"))
    assert "this job is timed-out" in said  # submitit's words on Slurm's signal
    assert "Slurm restart 1: continuing from" in (run / "train.log").read_text()
    want = json.loads((run_dirs(tmp_path / "straight")[0] / "metrics.json").read_text())
    got = json.loads((run / "metrics.json").read_text())
    assert got["metrics"] == want["metrics"]
    assert got["best"] == want["best"]
    assert got["test_confusion"] == want["test_confusion"]
    assert got["compute"] == want["compute"] == {"processes": 1, "torch_threads": 1}


def test_without_accounting_a_job_that_dies_silently_is_reported_not_waited_for(tmp_path):
    """A cluster without Slurm's accounting: ``sacct`` fails (here a stand-in on ``PATH`` that
    says what Slurm says there). A job killed without writing its result (as the kernel kills
    one out of memory) ends the sweep promptly with the job's state and log."""
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "sacct").write_text(
        "#!/bin/sh\necho 'Slurm accounting storage is disabled' >&2\nexit 1\n"
    )
    (shim / "sacct").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}",
        "DUMMY_TASK_SELF_KILL": "1",
    }
    t0 = time.monotonic()
    res = subprocess.run(
        dummy(tmp_path, "-m", "model.optimizer.lr=0.1"),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode != 0
    assert time.monotonic() - t0 < 180
    (line,) = [x for x in res.stderr.splitlines() if "job 0 (Slurm " in x]  # one line
    assert "ENDED (no accounting)) [" in line or "FAILED) [" in line  # squeue's word, or sacct's
    assert "model.optimizer.lr=0.1]: no result; log: " in line
