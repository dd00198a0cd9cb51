"""evaluate.py run for real on a checkpoint of train.py."""

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml

from inat_lightning.config import ConfigError
from inat_lightning.data.manifest import read_manifest, safe_folder_name
from inat_lightning.evaluation import evaluate
from inat_lightning.models.confusion import Confusion
from inat_lightning.runs.overrides import quote
from tests.helpers.cli import QUICK, compose_config, run_cli, run_dirs
from tests.helpers.tensorboard import tensorboard_tags


@pytest.mark.slow
def test_evaluate_reproduces_training_test_metrics_and_writes_the_report(short_evaluation):
    run, out = short_evaluation
    trained = json.loads((run / "metrics.json").read_text())
    summary = json.loads((out / "metrics.json").read_text())

    # same checkpoint, same restored split: the same test metrics as training logged
    for key in ("test/acc", "test/acc_macro", "test/f1_macro", "test/recall_macro"):
        assert summary["metrics"][key] == pytest.approx(trained["metrics"][key], abs=1e-6), key
    assert summary["test_confusion"] == trained["test_confusion"]
    assert (out / "splits.csv").read_text() == (run / "splits.csv").read_text()
    used = yaml.safe_load((out / "data.yaml").read_text())
    trained_data = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())["data"]
    assert used["batch_size"] == 7 and trained_data["batch_size"] != 7
    assert used["synthetic"] == trained_data["synthetic"]  # the rest is the run's
    # preprocessing from the checkpoint's input spec (the run trained at 32 px, ratio 0.75)
    assert (used["image_size"], used["crop_ratio"]) == (32, 0.75)
    tested = list(csv.DictReader((out / "test_predictions.csv").open()))
    assert len(tested) == Confusion.from_record(summary["test_confusion"]).total
    # the vision model's answers are the test loop's; the final ones are fused with the place
    # prior (the synthetic species have ranges and seasons), as predict.py answers
    vision = sum(r["true"] == r["vision_prediction"] for r in tested) / len(tested)
    fused = sum(r["true"] == r["prediction"] for r in tested) / len(tested)
    assert vision == pytest.approx(summary["metrics"]["test/acc"], abs=1e-6)
    prior = summary["place_prior"]
    assert prior["top1_vision"] == pytest.approx(vision) and prior["top1_fused"] == pytest.approx(
        fused
    )
    assert prior["gain"] == pytest.approx(fused - vision) and prior["with_place_or_date"] > 0
    assert summary["open_set"]["rule"]["score"] == "max_softmax"
    assert "auroc" not in summary["open_set"]  # no held-out species in this run
    points = summary["coverage"]["at_threshold"]
    assert [p["answers"] for p in points] == ["species", "fallback"]
    assert all(p["threshold"] == 0.5 for p in points)
    # the fallback answers at least the photos species-only answers do
    assert points[1]["coverage"] >= points[0]["coverage"]
    # no cue boxes in these test photos: discovery ran, by default (audit.discover=auto), on all
    found = summary["discovery"]
    assert (found["examined_photos"], found["examined_classes"]) == (len(tested), 4)
    assert all((out / f).is_file() for f in ("discovered_cues.csv", "discovered_boxes.csv"))
    assert "## Discovered cues (nobody boxed them)" in (out / "report.md").read_text()
    card = (out / "MODEL.md").read_text()
    assert "## Bias audit" in card and "## Test results" in card

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
        "## Where and when: the place prior",
        "![accuracy against coverage](risk_coverage.png)",
        "## Not one of mine",
        "## Near-duplicate photos",
    ):
        assert piece in report, piece
    pngs = ("confusion_matrix.png", "per_class.png", "long_tail.png", "risk_coverage.png")
    for png in (*pngs, *summary["gradcam"]):
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


def test_a_data_value_that_contradicts_the_checkpoint_spec_is_an_error(short_training, tmp_path):
    run, _ = short_training
    best = json.loads((run / "metrics.json").read_text())["best_checkpoint"]
    cfg = compose_config("evaluate", tmp_path, f"ckpt_path={best}", "+data_overrides.image_size=64")
    with pytest.raises(ConfigError, match=r"^data.image_size=64: contradicts .*image_size=32"):
        evaluate(cfg)
    assert not (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.slow
def test_held_out_species_measure_the_out_of_set_flag_that_predict_raises(tmp_path):
    """A species left out of training (``data.held_out_classes``): evaluate.py measures AUROC
    and the false-accept rate on its photos; predict.py flags the same photos
    ``not_in_classes`` by the checkpoint's rule, so its flags agree with that rate."""
    held = "Cochlea spiralis"  # the 5th species of the catalogue without look-alikes
    res = run_cli(
        "train.py",
        *QUICK,
        "data.synthetic.num_species=5",
        "data.synthetic.observations_per_species=24",
        f"data.held_out_classes=[{held}]",
        tmp_path=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    (run,) = run_dirs(tmp_path / "logs")
    trained = json.loads((run / "metrics.json").read_text())
    assert held not in trained["class_names"] and len(trained["class_names"]) == 4
    best = trained["best_checkpoint"]
    res = run_cli(
        "evaluate.py", f"ckpt_path='{best}'", tmp_path=tmp_path / "e", data_dir=tmp_path / "data"
    )
    assert res.returncode == 0, res.stderr[-3000:]
    (out,) = run_dirs(tmp_path / "e" / "logs")
    found = json.loads((out / "metrics.json").read_text())["open_set"]
    photos = [
        r
        for r in read_manifest(tmp_path / "data" / "synthetic" / "manifest.csv")
        if r.taxon_name == held
    ]
    assert found["held_out_photos"] == len(photos) > 0
    assert set(found["auroc"]) == {"max_softmax", "energy"}
    assert all(0.0 <= v <= 1.0 for v in found["auroc"].values())
    report = (out / "report.md").read_text()
    assert "| score | AUROC |" in report and "![out-of-set scores](open_set_scores.png)" in report
    assert (out / "open_set_scores.png").stat().st_size > 1000

    res = run_cli(
        "predict.py",
        f"ckpt_path='{best}'",
        f"inputs={tmp_path / 'data' / 'synthetic' / safe_folder_name(held)}",
        "explain=false",
        tmp_path=tmp_path / "p",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    (pred,) = run_dirs(tmp_path / "p" / "logs")
    rows = list(csv.DictReader((pred / "predictions.csv").open()))
    assert len(rows) == len(photos)
    accepted = sum(r["not_in_classes"] == "False" for r in rows) / len(rows)
    assert accepted == pytest.approx(found["false_accept_rate"], abs=1e-9)


@pytest.mark.slow
def test_a_copied_run_folder_cannot_choose_where_evaluate_writes(
    short_training, shared_data_dir, tmp_path
):
    """A run folder from another machine names its data folder there (an absolute
    ``paths.data_dir``): evaluate reads the same embedded data from this command's data folder
    and creates nothing at the run's path; its test split and metrics are the run's. It was saved
    before the data config's ``crop_ratio`` took the input spec's name (``eval_crop_ratio``)."""
    run, _ = short_training
    copy = tmp_path / "shared_run"
    shutil.copytree(run, copy)
    foreign = tmp_path / "their_machine" / "data"
    saved = copy / ".hydra" / "config.yaml"
    config = yaml.safe_load(saved.read_text())
    config["paths"]["data_dir"] = str(foreign)
    config["data"]["hash_cache"] = str(foreign / "phash-cache")
    config["data"]["eval_crop_ratio"] = config["data"].pop("crop_ratio")
    saved.write_text(yaml.safe_dump(config))
    trained = json.loads((run / "metrics.json").read_text())
    best = copy / "checkpoints" / Path(trained["best_checkpoint"]).name
    res = run_cli(
        "evaluate.py",
        f"ckpt_path={quote(best)}",
        "callbacks=none",
        tmp_path=tmp_path,
        data_dir=shared_data_dir,  # this command's: the embedded data set is there
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert not (tmp_path / "their_machine").exists()  # nothing made where the folder said
    (out,) = run_dirs(tmp_path / "logs")
    found = json.loads((out / "metrics.json").read_text())
    assert found["test_confusion"] == trained["test_confusion"]
    used = yaml.safe_load((out / "data.yaml").read_text())
    assert used["crop_ratio"] == 0.75 and "eval_crop_ratio" not in used
