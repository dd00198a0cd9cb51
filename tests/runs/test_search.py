"""The Optuna (≥ 4) sweeper: search-space syntax, a study that survives SIGKILL, two processes
sharing one study, pruning, and DDP jobs inside a sweep."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from inat_lightning.models.confusion import Confusion
from inat_lightning.runs.optuna_sweeper import distribution, override_text, worker_seed
from inat_lightning.runs.summary import collect
from tests.helpers.cli import QUICK, REPO, SMALL, run_cli, run_dirs

STUDY = "optuna_sgd"


def parsed(text: str):
    (override,) = OverridesParser.create().parse_overrides([text])
    return distribution(override)


def test_the_search_space_syntax_of_hydra_becomes_optuna_distributions():
    assert parsed("a=choice(16, 32, 64)") == CategoricalDistribution([16, 32, 64])
    assert parsed("a=interval(0.8, 0.99)") == FloatDistribution(0.8, 0.99)
    assert parsed("a=tag(log, interval(1e-5, 1e-3))") == FloatDistribution(1e-5, 1e-3, log=True)
    assert parsed("a=int(interval(0, 3))") == IntDistribution(0, 3)
    assert parsed("a=range(1, 5)") == IntDistribution(1, 4)
    assert parsed("a=range(0.1, 0.5, 0.1)") == FloatDistribution(0.1, 0.5, step=0.1)
    assert parsed("a=3") is None  # a plain value is fixed, not searched
    assert override_text("x", "sqlite:////tmp/a b/o.db") == "x='sqlite:////tmp/a b/o.db'"
    assert override_text("x", 0.001) == "x=0.001"


DUMMY = REPO / "tests" / "helpers" / "dummy_task.py"


def search_args(tmp_path: Path, data_dir: Path, *extra: str, script: Path = DUMMY) -> list[str]:
    """The README's search command; by default on the dummy task (the sweeper's bookkeeping
    needs no training: tests/helpers/dummy_task.py)."""
    return [
        sys.executable,
        str(script),
        "hparams_search=optuna_sgd",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"paths.data_dir={data_dir}",
        *(o for o in QUICK if not o.startswith("data.batch_size")),
        "hydra.sweeper.heartbeat_interval=1",
        "hydra.sweeper.grace_period=3",
        *extra,
    ]


def load(tmp_path: Path) -> optuna.Study:
    db = tmp_path / "logs" / "train" / "searches" / STUDY / "optuna.db"
    return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{db}")


def states(study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    return {
        s.name: sum(t.state == s for t in trials)
        for s in TrialState
        if any(t.state == s for t in trials)
    }


@pytest.mark.slow
def test_a_search_killed_mid_trial_resumes_without_rerunning_finished_trials(
    tmp_path, shared_data_dir
):
    args = search_args(tmp_path, shared_data_dir, "hydra.sweeper.n_trials=4")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DUMMY_TASK_SECONDS": "2"}
    first = subprocess.Popen(
        args,
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            time.sleep(0.5)
            db = tmp_path / "logs" / "train" / "searches" / STUDY / "optuna.db"
            # read only once a trial's job has started: the search made its database and study
            # by then (opening a database another process is still creating races it)
            jobs = list(db.parent.glob("*/.hydra"))  # the third trial's job has started
            found = states(load(tmp_path)) if jobs else {}
            if found.get("COMPLETE", 0) >= 2 and found.get("RUNNING", 0) >= 1 and len(jobs) >= 3:
                break
            assert first.poll() is None, "the search ended before it could be killed"
        os.killpg(first.pid, signal.SIGKILL)  # mid-trial: the third is running
    finally:
        first.wait(60)
    time.sleep(3.5)  # past the grace period: the killed trial's heartbeat is stale
    before = states(load(tmp_path))
    assert before.get("COMPLETE") == 2 and before.get("RUNNING") == 1, before
    sweep = tmp_path / "logs" / "train" / "searches" / STUDY
    finished = {p: p.stat().st_mtime_ns for p in sweep.glob("*/metrics.json")}
    assert len(finished) == 2

    again = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-4000:]
    study = load(tmp_path)
    after = states(study)
    assert after["COMPLETE"] == 4 and after["FAIL"] == 1, after  # the killed one, retried
    killed = next(t for t in study.trials if t.state == TrialState.FAIL)
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retried) == 1 and retried[0].params == killed.params
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # the first two not re-run

    rows = collect(sweep)
    assert sorted(r["status"] for r in rows) == ["done"] * 4 + ["failed or running"]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert results["trials"]["complete"] == 4
    assert results["best_value"] == pytest.approx(max(t.value for t in complete))
    summary = {r["job"]: r for r in rows}
    best = max(complete, key=lambda t: t.value)
    assert summary[best.number]["val/f1_macro"] == pytest.approx(best.value, abs=1e-6)


@pytest.mark.slow
def test_two_processes_share_one_study_without_running_a_trial_twice(tmp_path, shared_data_dir):
    args = search_args(tmp_path, shared_data_dir, "hydra.sweeper.n_trials=4")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DUMMY_TASK_SECONDS": "1"}
    procs = [
        subprocess.Popen(
            args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors[0][-3000:] + errors[1][-3000:]
    study = load(tmp_path)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4  # exactly n_trials, together
    surplus = [t for t in study.trials if t.user_attrs.get("surplus")]
    assert len(study.trials) == 4 + len(surplus)
    sweep = tmp_path / "logs" / "train" / "searches" / STUDY
    numbers = [json.loads(p.read_text())["number"] for p in sweep.glob("*/trial.json")]
    assert sorted(numbers) == sorted(t.number for t in complete)  # one job per trial
    # each process drew from its own seed (derived from the study's): no parameter set twice
    assert len({tuple(sorted(t.params.items())) for t in complete}) == 4
    assert study.user_attrs["workers_joined"] == 2


def test_each_worker_of_a_study_gets_its_own_reproducible_seed():
    assert worker_seed(1234, 0) == 1234  # the first process: the configured seed
    seeds = [worker_seed(1234, k) for k in range(1, 50)]
    assert len(set(seeds)) == 49 and 1234 not in seeds
    assert seeds == [worker_seed(1234, k) for k in range(1, 50)]  # the same on any machine


@pytest.mark.slow
def test_a_bad_trial_is_pruned_early_and_shown_as_pruned(tmp_path, shared_data_dir):
    res = run_cli(
        "train.py",
        "hparams_search=optuna_sgd",
        *(o for o in SMALL if not o.startswith("data.batch_size")),
        "trainer.max_epochs=3",
        "+trainer.limit_train_batches=10",
        "+trainer.limit_val_batches=4",
        "~callbacks.gradcam",
        "~callbacks.metric_figures",
        "hydra.sweeper.n_trials=2",
        "~hydra.sweeper.params",
        # the second trial diverges (its loss becomes NaN): a trial any pruner gives up on
        "hydra.sweeper.enqueue_trials=[{model.optimizer.lr: 0.01}, {model.optimizer.lr: 1e6}]",
        "model.optimizer.lr=choice(0.01, 1e6)",
        "hydra.sweeper.pruner.n_startup_trials=1",
        "hydra.sweeper.pruner.n_warmup_steps=0",
        "optimized_metric=val/loss",
        "hydra.sweeper.direction=minimize",
        tmp_path=tmp_path,
        data_dir=shared_data_dir,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    study = load(tmp_path)
    good, bad = sorted(study.trials, key=lambda t: t.number)
    assert good.params["model.optimizer.lr"] == 0.01 and good.state == TrialState.COMPLETE
    assert bad.params["model.optimizer.lr"] == 1e6 and bad.state == TrialState.PRUNED
    assert len(good.intermediate_values) == 3 and len(bad.intermediate_values) < 3
    jobs = {
        json.loads((j / "trial.json").read_text())["number"]: j for j in run_dirs(tmp_path / "logs")
    }
    epoch_lines = (jobs[bad.number] / "train.log").read_text().count(" - epoch ")
    assert epoch_lines < 3
    rows = {r["job"]: r for r in collect(jobs[0].parent)}
    assert rows[bad.number]["status"] == "pruned" and rows[good.number]["status"] == "done"


@pytest.mark.slow
def test_a_sweep_of_ddp_jobs_with_two_processes_each(tmp_path, shared_data_dir):
    res = run_cli(
        "train.py",
        "-m",
        *QUICK,
        "trainer=ddp_spawn",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "model.optimizer.lr=0.1,0.01",
        tmp_path=tmp_path,
        data_dir=shared_data_dir,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    jobs = run_dirs(tmp_path / "logs")
    assert len(jobs) == 2
    for job in jobs:
        summary = json.loads((job / "metrics.json").read_text())
        # every test image counted once, though two processes shared the test set
        assert (
            Confusion.from_record(summary["test_confusion"]).total == summary["split_sizes"]["test"]
        )
    rows = list(csv.DictReader((jobs[0].parent / "summary.csv").open()))
    assert [r["status"] for r in rows] == ["done", "done"]
