"""train.py run for real, as a user would, with overrides."""

import json

import numpy as np
import pytest
from PIL import Image

from inat_lightning.analysis.tiles import CAPTION_PX
from inat_lightning.models.confusion import Confusion
from tests.helpers.cli import SMALL, run_cli, run_dirs
from tests.helpers.tensorboard import tensorboard_tags


@pytest.mark.slow
def test_fast_dev_run(tmp_path, shared_data_dir, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # recorded in metrics.json: a known value
    res = run_cli(
        "train.py", *SMALL, "debug=fast_dev_run", tmp_path=tmp_path, data_dir=shared_data_dir
    )
    assert res.returncode == 0, res.stderr[-4000:]
    (run,) = run_dirs(tmp_path / "logs")
    summary = json.loads((run / "metrics.json").read_text())
    assert {"test/acc", "test/f1_macro", "val/acc", "train/loss_epoch"} <= set(summary["metrics"])
    assert (run / "splits.csv").is_file()
    assert len(summary["class_names"]) == 4
    assert summary["tags"] == ["dev"]  # the config's tags, kept with the run
    # what its float sums depended on
    assert summary["compute"] == {"processes": 1, "torch_threads": 1}


@pytest.mark.slow
def test_short_training_beats_chance_and_logs_everything(short_training):
    run, _ = short_training
    summary = json.loads((run / "metrics.json").read_text())
    m = summary["metrics"]
    assert m["test/acc"] > 2 * summary["chance_accuracy"], m
    # the best checkpoint was tested, and the confusion matrix counts every test image once
    ckpts = {p.name for p in (run / "checkpoints").iterdir()}
    assert "last.ckpt" in ckpts and summary["best_checkpoint"].endswith(".ckpt")
    assert Confusion.from_record(summary["test_confusion"]).total == summary["split_sizes"]["test"]
    # TensorBoard has the scalars, the LR, per-class F1 and the confusion matrix figure
    tb = tensorboard_tags(run)
    scalars = tb["scalars"]
    assert {
        "val/f1_macro",
        "val/acc_macro",
        "train/loss_epoch",
        "test/recall_macro",
        "lr-SGD",
    } <= set(scalars)
    assert any(t.startswith("val/f1_class/") for t in scalars)
    # final metrics for the HPARAMS tab, where the runs of a sweep line up
    assert {"hp/best/val/f1_macro", "hp/test/acc", "hp/val/f1_macro"} <= set(scalars)
    assert scalars["hp/test/acc"][-1].value == pytest.approx(m["test/acc"])
    assert len(scalars["val/f1_macro"]) == 2
    assert {f"{s}/{f}" for s in ("val", "test") for f in ("confusion_matrix", "per_class")} <= set(
        tb["images"]
    )
    assert "val/confused_pairs/text_summary" in tb["tensors"]
    # Grad-CAM galleries per class, at every validation epoch and at test, in TensorBoard and PNG
    names = json.loads((run / "metrics.json").read_text())["class_names"]
    for stage in ("val", "test"):
        assert {f"{stage}/gradcam/{n}" for n in names} <= set(tb["images"])
    assert len(tb["images"][f"val/gradcam/{names[0]}"]) == 2
    assert {p.name for p in (run / "gradcam" / "test").rglob("*.png")} >= {
        f"{n}.png" for n in names
    }
    # readable: 32 px inputs upscaled to 192 px tiles (3 per row), each captioned below
    grid = next((run / "gradcam" / "test").rglob(f"{names[0]}.png"))
    with Image.open(grid) as img:
        pixels = np.asarray(img.convert("L"))
    tile_h = 192 + (CAPTION_PX + 3) * 2 + 6  # two caption lines under each tile
    assert img.width == 3 * (192 + 2) + 2 and (img.height - 2) % (tile_h + 2) == 0
    band = pixels[2 + 192 : 2 + tile_h, 2 : 2 + 192]  # the first tile's caption
    assert (band > 200).sum() > 50 and (band < 30).mean() > 0.5  # white text on black
    frames = tb["images"][f"test/gradcam/{names[0]}"]
    assert (
        frames[-1].height == img.height - 4 or frames[-1].height > 192
    )  # captioned in TensorBoard too


@pytest.mark.slow
def test_train_false_tests_the_given_checkpoint(short_training, tmp_path, shared_data_dir):
    run, _ = short_training
    trained = json.loads((run / "metrics.json").read_text())
    res = run_cli(
        "train.py",
        *SMALL,
        "train=false",
        f"ckpt_path={trained['best_checkpoint']}",
        "~callbacks.gradcam",
        tmp_path=tmp_path,
        data_dir=shared_data_dir,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    (again,) = run_dirs(tmp_path / "logs")
    tested = json.loads((again / "metrics.json").read_text())
    assert tested["metrics"]["test/acc"] == pytest.approx(trained["metrics"]["test/acc"])
    assert tested["test_confusion"] == trained["test_confusion"]
    # (the same numbers: the checkpoint's preprocessing, ratio 0.75, not this command's 0.875)


@pytest.mark.slow
def test_train_false_refuses_a_preprocessing_that_contradicts_the_checkpoint(
    short_training, tmp_path, shared_data_dir
):
    run, _ = short_training
    best = json.loads((run / "metrics.json").read_text())["best_checkpoint"]
    res = run_cli(
        "train.py",
        *SMALL,
        "train=false",
        f"ckpt_path={best}",
        "data.crop_ratio=0.5",
        tmp_path=tmp_path,
        data_dir=shared_data_dir,
    )
    assert res.returncode == 2
    assert "config error: data.crop_ratio=0.5: contradicts the checkpoint" in res.stderr
