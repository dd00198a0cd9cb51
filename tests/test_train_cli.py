"""train.py run for real, as a user would, with overrides."""

import json

import pytest

from tests.conftest import run_cli, run_dirs, tensorboard_tags

# an easy synthetic set (4 clearly distinct species) and a tiny model: seconds per epoch
SMALL = [
    "model=resnet18",
    "data.image_size=32",
    "data.num_workers=0",
    "data.batch_size=16",
    "data.synthetic.num_species=4",
    "data.synthetic.lookalikes=false",
    "data.synthetic.observations_per_species=100",
    "data.synthetic.image_size=48",
]


@pytest.mark.slow
def test_fast_dev_run(tmp_path, shared_data_dir):
    res = run_cli(
        "train.py", *SMALL, "debug=fast_dev_run", tmp_path=tmp_path, data_dir=shared_data_dir
    )
    assert res.returncode == 0, res.stderr[-4000:]
    (run,) = run_dirs(tmp_path / "logs")
    summary = json.loads((run / "metrics.json").read_text())
    assert {"test/acc", "test/f1_macro", "val/acc", "train/loss_epoch"} <= set(summary["metrics"])
    assert (run / "splits.csv").is_file()
    assert len(summary["class_names"]) == 4


@pytest.mark.slow
def test_short_training_beats_chance_and_logs_everything(tmp_path, shared_data_dir):
    res = run_cli(
        "train.py",
        *SMALL,
        "trainer.max_epochs=2",
        "seed=1",
        tmp_path=tmp_path,
        data_dir=shared_data_dir,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    (run,) = run_dirs(tmp_path / "logs")
    summary = json.loads((run / "metrics.json").read_text())
    m = summary["metrics"]
    assert m["test/acc"] > 2 * summary["chance_accuracy"], m
    # the best checkpoint was tested, and the confusion matrix counts every test image once
    ckpts = {p.name for p in (run / "checkpoints").iterdir()}
    assert "last.ckpt" in ckpts and summary["best_checkpoint"].endswith(".ckpt")
    assert sum(map(sum, summary["test_confusion_matrix"])) == summary["split_sizes"]["test"]
    # TensorBoard has the scalars, the LR, per-class F1 and the confusion matrix figure
    tb = tensorboard_tags(run)
    scalars = tb["scalars"]
    assert {"val/f1_macro", "val/acc_macro", "train/loss_epoch", "test/top5", "lr-SGD"} <= set(
        scalars
    )
    assert any(t.startswith("val/f1_class/") for t in scalars)
    assert len(scalars["val/f1_macro"]) == 2
    assert {"val/confusion_matrix", "test/confusion_matrix"} <= set(tb["images"])
