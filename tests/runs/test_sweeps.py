"""Hydra multiruns and Optuna searches through the real CLI, and the sweep summary."""

import csv
import json
import math
import statistics

import pytest
import yaml

from inat_lightning.runs.names import short_name
from inat_lightning.runs.summary import collect, write_summary
from tests.helpers.cli import QUICK, SMALL, run_cli, run_dirs


def fake_job(sweep, num, overrides, metrics=None):
    job = sweep / f"{num}_job"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps({"metrics": metrics}))


def test_summary_lists_varying_overrides_and_metrics_per_job(tmp_path):
    resumed = ["resume=true", "run_name='x'"]  # bookkeeping of a resumed job: not columns
    fake_job(
        tmp_path, 0, ["model=resnet18", "model.optimizer.lr=0.1", *resumed], {"val/f1_macro": 0.5}
    )
    fake_job(tmp_path, 1, ["model=resnet18", "model.optimizer.lr=0.01"], {"val/f1_macro": 0.7})
    fake_job(tmp_path, 10, ["model=resnet18", "model.optimizer.lr=0.001"])  # crashed
    (tmp_path / "11_job" / ".hydra").mkdir(parents=True)  # killed before Hydra wrote its config
    md = write_summary(tmp_path, "val/f1_macro")
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert [r["job"] for r in rows] == ["0", "1", "10", "11"]  # numeric order, not text order
    assert "model" not in rows[0]  # the same in every job: not a column
    assert "resume" not in rows[0] and "run_name" not in rows[0]
    assert [r["model.optimizer.lr"] for r in rows] == ["0.1", "0.01", "0.001", ""]
    assert [r["val/f1_macro"] for r in rows] == ["0.5000", "0.7000", "", ""]
    assert rows[2]["status"] == rows[3]["status"] == "failed or running"
    assert "Best val/f1_macro: 0.7000 (job 1)" in md.read_text()


def test_fold_summary_gives_mean_and_std_of_the_per_fold_metrics(tmp_path):
    f1 = {"0.1": [0.5, 0.7, 0.6], "0.01": [0.4, 0.45, 0.5]}
    for lr, scores in f1.items():
        for fold, score in enumerate(scores):
            job = len(list(tmp_path.iterdir()))
            overrides = [
                "data.split.folds=3",
                f"data.split.fold={fold}",
                f"model.optimizer.lr={lr}",
            ]
            fake_job(tmp_path, job, overrides, {"val/f1_macro": score, "test/acc": score / 2})
    fake_job(tmp_path, 99, ["data.split.folds=3", "data.split.fold=2", "model.optimizer.lr=0.1"])
    md = write_summary(tmp_path).read_text()
    rows = {r["setting"]: r for r in csv.DictReader((tmp_path / "cv_summary.csv").open())}
    assert set(rows) == {"model.optimizer.lr=0.1", "model.optimizer.lr=0.01"}
    for lr, scores in f1.items():
        row = rows[f"model.optimizer.lr={lr}"]
        assert row["folds"] == "3"  # the crashed job is not a fold
        assert float(row["val/f1_macro mean"]) == pytest.approx(statistics.mean(scores), abs=1e-4)
        assert float(row["val/f1_macro std"]) == pytest.approx(statistics.stdev(scores), abs=1e-4)
        assert float(row["test/acc mean"]) == pytest.approx(statistics.mean(scores) / 2, abs=1e-4)
    assert "## Cross-validation" in md and "0.6000 ± 0.1000" in md


def test_the_summary_states_the_held_out_observer_gap(tmp_path):
    fake_job(
        tmp_path, 0, ["data.split.group_by=observation"], {"test/acc": 0.9, "val/f1_macro": 0.8}
    )
    fake_job(tmp_path, 1, ["data.split.group_by=observer"], {"test/acc": 0.6, "val/f1_macro": 0.5})
    md = write_summary(tmp_path).read_text()
    assert "test/acc: 0.9000 split by observation, 0.6000 by observer: gap +0.3000" in md


def test_run_names_stay_short_and_unique():
    long = ",".join(f"data.synthetic.key_{i}=value_{i}" for i in range(20))
    name = short_name(long)
    assert len(name) <= 140 and "/" not in short_name("data.root=/a/b")
    assert name.startswith("key_0=value_0,key_1=value_1")  # keys cut to their last part
    assert name != short_name(long.replace("value_19", "other"))  # the hash tells them apart
    assert short_name("model.optimizer.lr=0.1") == "model.optimizer.lr=0.1"


@pytest.mark.slow
def test_grid_multirun_gives_each_job_its_run_and_tensorboard_and_a_summary(
    tmp_path, shared_data_dir
):
    res = run_cli(
        "train.py",
        "-m",
        *QUICK,
        "model.optimizer.lr=0.1,0.01",
        "data.split.seed=1,2",
        tmp_path=tmp_path,
        data_dir=shared_data_dir,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    jobs = run_dirs(tmp_path / "logs")
    assert len(jobs) == 4 and len({j.parent for j in jobs}) == 1
    sweep = jobs[0].parent
    for job in jobs:
        (tb_run,) = (job / "tensorboard").iterdir()  # one TensorBoard run, named by overrides
        assert list(tb_run.glob("events.out.tfevents.*"))
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        swept = [o.split(".")[-1] for o in overrides if o.startswith(("model.opt", "data.split"))]
        assert len(swept) == 2 and all(s in tb_run.name for s in swept), tb_run.name
        assert (job / "metrics.json").is_file()
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert {(r["model.optimizer.lr"], r["data.split.seed"]) for r in rows} == {
        ("0.1", "1"),
        ("0.1", "2"),
        ("0.01", "1"),
        ("0.01", "2"),
    }
    for r in rows:
        assert 0 <= float(r["val/f1_macro"]) <= 1 and 0 <= float(r["test/acc"]) <= 1
        assert r["status"] == "done"
    assert (sweep / "summary.md").read_text().count("\n| ") == 5  # header + 4 jobs


@pytest.mark.slow
def test_k_fold_multirun_reports_each_fold_and_their_mean(tmp_path, shared_data_dir):
    res = run_cli(
        "train.py",
        "-m",
        *QUICK,
        "data.split.folds=2",
        "data.split.fold=0,1",
        tmp_path=tmp_path,
        data_dir=shared_data_dir,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    jobs = run_dirs(tmp_path / "logs")
    assert len(jobs) == 2
    splits = [
        {r["path"]: r["split"] for r in csv.DictReader((j / "splits.csv").open())} for j in jobs
    ]
    assert splits[0].keys() == splits[1].keys()
    for path, split in splits[0].items():  # test fixed; train and val swap between the 2 folds
        other = splits[1][path]
        assert other == split if split == "test" else {split, other} == {"train", "val"}
    scores = [json.loads((j / "metrics.json").read_text())["metrics"]["test/acc"] for j in jobs]
    (row,) = csv.DictReader((jobs[0].parent / "cv_summary.csv").open())
    assert row["folds"] == "2"
    assert float(row["test/acc mean"]) == pytest.approx(statistics.mean(scores), abs=1e-4)
    assert float(row["test/acc std"]) == pytest.approx(statistics.stdev(scores), abs=1e-4)


@pytest.mark.slow
def test_optuna_search_samples_in_range_and_reports_the_best(tmp_path, shared_data_dir):
    res = run_cli(
        "train.py",
        "hparams_search=optuna_sgd",
        "hydra.sweeper.n_trials=3",
        *(o for o in SMALL if not o.startswith("data.batch_size")),  # a given value is not searched
        "debug=fast_dev_run",
        tmp_path=tmp_path,
        data_dir=shared_data_dir,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    jobs = run_dirs(tmp_path / "logs")
    assert len(jobs) == 3
    sweep = jobs[0].parent
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best = result["best_params"]
    assert set(best) == {
        "model.optimizer.lr",
        "model.optimizer.momentum",
        "model.optimizer.weight_decay",
        "model.scheduler.factor",
        "model.scheduler.patience",
        "data.batch_size",
    }
    assert 0.001 <= best["model.optimizer.lr"] <= 0.1 and best["data.batch_size"] in (16, 32, 64)
    rows = collect(sweep)
    lrs = {r["overrides"]["model.optimizer.lr"] for r in rows}
    assert len(lrs) == 3  # each trial got its own sample
    # train.py returned val/f1_macro to Optuna: its best is the best of the jobs' metrics
    scores = [r["val/f1_macro"] for r in rows if not math.isnan(r["val/f1_macro"])]
    assert result["best_value"] == pytest.approx(max(scores))
    assert "Best val/f1_macro" in (sweep / "summary.md").read_text()
