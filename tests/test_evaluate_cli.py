"""evaluate.py run for real on a checkpoint of train.py."""

import json

import pytest
import yaml

from tests.helpers.cli import run_cli, run_dirs
from tests.helpers.tensorboard import tensorboard_tags


@pytest.mark.slow
def test_evaluate_reproduces_training_test_metrics_and_writes_the_report(
    short_training, tmp_path, shared_data_dir
):
    run, _ = short_training
    trained = json.loads((run / "metrics.json").read_text())
    res = run_cli(
        "evaluate.py",
        f"ckpt_path={trained['best_checkpoint']}",
        "data.batch_size=7",  # applied on top of the restored data config
        tmp_path=tmp_path,
        data_dir=shared_data_dir,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    (out,) = run_dirs(tmp_path / "logs")
    summary = json.loads((out / "metrics.json").read_text())

    # same checkpoint, same restored split: the same test metrics as training logged
    for key in ("test/acc", "test/acc_macro", "test/f1_macro", "test/recall_macro"):
        assert summary["metrics"][key] == pytest.approx(trained["metrics"][key], abs=1e-6), key
    assert summary["test_confusion_matrix"] == trained["test_confusion_matrix"]
    assert (out / "splits.csv").read_text() == (run / "splits.csv").read_text()
    used = yaml.safe_load((out / "data.yaml").read_text())
    trained_data = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())["data"]
    assert used["batch_size"] == 7 and trained_data["batch_size"] != 7
    assert used["synthetic"] == trained_data["synthetic"]  # the rest is the run's

    per_class = (out / "per_class.csv").read_text().splitlines()
    assert per_class[0] == "class,support,predicted,precision,recall,f1,train_images"
    assert len(per_class) == 5
    f1s = [float(line.split(",")[5]) for line in per_class[1:]]
    assert f1s == sorted(f1s)  # weakest first
    # the synthetic species have a taxonomy: rank metrics logged in training and evaluation
    assert summary["taxonomy"]["classes_with_lineage"] == 4
    for key in ("test/acc_genus", "test/acc_family"):
        assert summary["metrics"][key] == pytest.approx(trained["metrics"][key], abs=1e-6)
    assert "val/acc_genus" in trained["metrics"]
    assert (out / "confused_pairs.csv").is_file()
    report = (out / "report.md").read_text()
    for piece in (
        "![confusion matrix](confusion_matrix.png)",
        "![per-class precision and recall](per_class.png)",
        "## Look-alike species",
        "## Taxonomy",
        "![accuracy against training images](long_tail.png)",
        "## CAM faithfulness",
        "gradcam/test/",
    ):
        assert piece in report, piece
    for png in ("confusion_matrix.png", "per_class.png", "long_tail.png", *summary["gradcam"]):
        assert (out / png).stat().st_size > 1000, png
    # no cue boxes in this data: CAM faithfulness per class instead of the cue audit
    assert summary["audit"]["kind"] == "faithfulness"
    assert {r["class"] for r in summary["audit"]["rows"]} == set(trained["class_names"])

    tb = tensorboard_tags(out)
    assert {
        f"evaluate/{t}/text_summary" for t in ("per_class", "confused_pairs", "bias_audit")
    } <= set(tb["tensors"])
    assert {"test/confusion_matrix", "test/long_tail"} <= set(tb["images"])
    assert "test/acc_genus" in tb["scalars"]
    assert any(t.startswith("test/gradcam/") for t in tb["images"])


@pytest.mark.slow
def test_evaluate_needs_a_checkpoint(tmp_path):
    res = run_cli(
        "evaluate.py", f"ckpt_path={tmp_path / 'missing.ckpt'}", tmp_path=tmp_path, timeout=120
    )
    assert res.returncode == 2 and "config error: ckpt_path=" in res.stderr
