"""predict.py: inputs, fusion, calibrated confidence, explanations and the exported model."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torchvision.transforms import v2

from inat_lightning.config import ConfigError
from inat_lightning.data.inputs import collect_inputs
from inat_lightning.data.manifest import Record, read_manifest, write_manifest
from inat_lightning.data.transforms import box_after_eval
from inat_lightning.models.calibration import ece, fit_temperature, softmax
from inat_lightning.models.checkpoint import load_classifier, write_temperature
from inat_lightning.prediction import fuse, predict
from tests.helpers.cli import compose_config, run_cli, run_dirs
from tests.helpers.data import make_image_folder
from tests.house.test_untrusted_files import small_checkpoint


def run_data(run: Path) -> dict:
    """What a training run's data config says of the images (interpolations resolved)."""
    data = OmegaConf.load(run / ".hydra" / "config.yaml").data
    return {k: data[k] for k in ("root", "image_size", "crop_ratio")}


# ---------------------------------------------------------------------- inputs
def test_a_folder_groups_sub_folders_into_observations_and_skips_other_files(tmp_path):
    make_image_folder(tmp_path / "obs-a", {"x": 2})  # obs-a/x/0.jpg, obs-a/x/1.jpg
    make_image_folder(tmp_path, {"obs-b": 3})
    Image.new("RGB", (8, 8)).save(tmp_path / "loose.png")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.jpg").write_bytes(b"")
    root, records, others = collect_inputs(str(tmp_path))
    assert root == tmp_path.resolve() and others == 1
    groups = {r.path: r.observation_id for r in records}
    assert groups["loose.png"] == "loose.png"  # at the top: its own observation
    assert {groups[f"obs-b/{i}.jpg"] for i in range(3)} == {"obs-b"}
    assert {groups[f"obs-a/x/{i}.jpg"] for i in range(2)} == {"obs-a/x"}
    assert all(not r.taxon_name for r in records)  # no truth without a manifest


def test_a_glob_a_file_and_a_manifest(tmp_path):
    make_image_folder(tmp_path / "photos", {"a": 3, "b": 2})
    root, records, _ = collect_inputs(str(tmp_path / "photos" / "*" / "*.jpg"))
    assert root == (tmp_path / "photos").resolve() and len(records) == 5
    root, records, _ = collect_inputs(str(tmp_path / "photos" / "a" / "0.jpg"))
    assert [r.path for r in records] == ["0.jpg"]
    write_manifest(
        tmp_path / "photos" / "manifest.csv",
        [Record("p1", "o1", "1", "a", "a/0.jpg"), Record("p2", "o1", "1", "a", "a/1.jpg")],
    )
    _, records, _ = collect_inputs(str(tmp_path / "photos"))  # a folder with a manifest: it
    assert [(r.observation_id, r.taxon_name) for r in records] == [("o1", "a"), ("o1", "a")]


def test_a_glob_or_a_file_inside_a_scraped_tree_keeps_its_observations_and_truth(tmp_path):
    root = tmp_path / "inat"
    make_image_folder(root, {"Apis mellifera": 3, "Bombus terrestris": 2})
    rows = [
        Record("11", "o1", "1", "Apis mellifera", "Apis mellifera/0.jpg"),
        Record("12", "o1", "1", "Apis mellifera", "Apis mellifera/1.jpg"),
        Record("13", "o2", "1", "Apis mellifera", "Apis mellifera/2.jpg"),
        Record("21", "o3", "2", "Bombus terrestris", "Bombus terrestris/0.jpg"),
        Record("22", "o3", "2", "Bombus terrestris", "Bombus terrestris/1.jpg"),
    ]
    write_manifest(root / "manifest.csv", rows)
    for inputs in (str(root / "*" / "*.jpg"), str(root), str(root / "Apis mellifera" / "*.jpg")):
        _, found, _ = collect_inputs(inputs)
        got = {r.photo_id: (r.observation_id, r.taxon_name) for r in found}
        expected = {r.photo_id: (r.observation_id, r.taxon_name) for r in rows}
        assert got == {k: v for k, v in expected.items() if k in got} and len(got) >= 3, inputs
    _, (one,), _ = collect_inputs(str(root / "Bombus terrestris" / "1.jpg"))
    assert (one.photo_id, one.observation_id, one.taxon_name) == ("22", "o3", "Bombus terrestris")


@pytest.mark.parametrize("what", ["empty", "missing", "nomatch", "text"])
def test_no_input_is_a_clear_error(tmp_path, what):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    (tmp_path / "a.txt").write_text("x")
    path = {
        "empty": tmp_path / "empty",
        "missing": tmp_path / "nowhere",
        "nomatch": tmp_path / "*.jpg",
        "text": tmp_path / "a.txt",
    }[what]
    with pytest.raises(ValueError, match=r"^inputs="):
        collect_inputs(str(path))


UNREADABLE_MANIFESTS = {
    "another tool's": b"name,size\nx.jpg,3\n",
    "a row leaving its root": b"photo_id,observation_id,taxon_name,path\n1,1,a,../x.jpg\n",
    "naming missing files": b"photo_id,observation_id,taxon_name,path\n1,1,a,a/gone.jpg\n",
    "not UTF-8": b"photo_id,observation_id,taxon_name,path\n1,1,\xff\xfe,a/0.jpg\n",
}


@pytest.mark.parametrize("manifest", UNREADABLE_MANIFESTS.values(), ids=UNREADABLE_MANIFESTS)
def test_a_manifest_above_the_photos_that_cannot_be_used_is_passed_over_with_a_warning(
    tmp_path, caplog, manifest
):
    """A ``manifest.csv`` in a folder above the photos (another tool's, a broken one) only
    adds observations and truth: it never stops the photos from being predicted."""
    (tmp_path / "manifest.csv").write_bytes(manifest)
    folder = tmp_path / "today"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "new.jpg")
    for inputs in (folder / "new.jpg", folder / "*.jpg"):
        caplog.clear()
        with caplog.at_level("WARNING"):
            root, records, _ = collect_inputs(str(inputs))
        assert root == folder.resolve() and [r.path for r in records] == ["new.jpg"]
        assert str(tmp_path / "manifest.csv") in caplog.text


def test_a_sub_folder_symlinked_out_of_the_inputs_is_named_not_read(tmp_path, caplog):
    make_image_folder(tmp_path / "photos", {"here": 1})
    make_image_folder(tmp_path / "other_disk", {"there": 2})
    os.symlink(tmp_path / "other_disk" / "there", tmp_path / "photos" / "there")
    with caplog.at_level("WARNING"):
        _, records, _ = collect_inputs(str(tmp_path / "photos"))
    assert [r.path for r in records] == ["here/0.jpg"]
    assert re.search(
        r"photos/there: symlinked to \S*other_disk/there, out of the inputs", caplog.text
    )


def test_predict_counts_the_places_rows_it_matched_and_refuses_two_places_for_a_photo(
    tmp_path, caplog
):
    ckpt = small_checkpoint(tmp_path / "model.ckpt")  # no place prior: the CSV is still checked
    photos = make_image_folder(tmp_path / "photos", {"a": 2}, 32)
    places = tmp_path / "places.csv"
    rows = f"path,lat,lng\n{(photos / 'a' / '0.jpg').resolve()},45,6\na/1.jpg,46,7\ngone.jpg,1,2\n"
    places.write_text(rows)
    cfg = compose_config(
        "predict",
        tmp_path,
        f"ckpt_path={ckpt}",
        f"inputs={photos}",
        f"places={places}",
        "explain=false",
        "num_workers=0",
        "progress=false",
    )
    with caplog.at_level("INFO"):
        predict(cfg)
    assert "places: 2 of 3 rows matched a photo" in caplog.text
    assert "row 4 (path 'gone.jpg') matches no photo of the inputs" in caplog.text
    assert "not used (the checkpoint has no place prior)" in caplog.text
    places.write_text(f"{rows}./a/1.jpg,47,7\n")
    with pytest.raises(ConfigError, match=r"^places=.*rows 3 and 5 name 'a/1\.jpg', with other"):
        predict(cfg)


# ---------------------------------------------------------------------- fusion, geometry
def test_fusion_is_the_softmax_of_the_mean_log_probability():
    probs = np.array([[0.6, 0.4], [0.2, 0.8], [0.9, 0.1], [np.nan, np.nan]])
    fused = fuse(probs, ["o1", "o1", "o2", "o2"])
    mean_log = np.log([0.6 * 0.2, 0.4 * 0.8]) / 2
    expected = np.exp(mean_log) / np.exp(mean_log).sum()
    assert fused["o1"] == pytest.approx(expected)
    assert fused["o2"] == pytest.approx([0.9, 0.1])  # the unreadable photo does not count


def test_a_box_follows_the_eval_resize_and_centre_crop():
    # 200 x 100 photo, 64 px input at ratio 0.5: short side to 128 (x1.28), crop 64 of 256 x 128
    box = box_after_eval((100, 50, 120, 60), 200, 100, 64, 0.5)
    assert box == pytest.approx((100 * 1.28 - 96, 50 * 1.28 - 32, 120 * 1.28 - 96, 60 * 1.28 - 32))


# ---------------------------------------------------------------------- calibration
def overconfident_logits(scale: float, n: int = 4000, k: int = 6, seed: int = 0):
    """Logits whose softmax is calibrated by construction (each label is drawn from it), then
    multiplied by ``scale``: a model exactly ``scale`` times over-confident."""
    g = torch.Generator().manual_seed(seed)
    calibrated = 1.5 * torch.randn(n, k, generator=g)
    labels = torch.multinomial(torch.softmax(calibrated, 1), 1, generator=g).squeeze(1)
    return scale * calibrated, labels


@pytest.mark.parametrize("scale", [3.0, 10.0])
def test_temperature_scaling_recovers_the_over_confidence_and_lowers_the_ece(scale):
    logits, labels = overconfident_logits(scale)
    t = fit_temperature(logits, labels)
    # the NLL optimum is the true temperature up to sampling noise (4000 draws: ~3 %)
    assert t == pytest.approx(scale, rel=0.15)
    before, after = ece(softmax(logits), labels.numpy()), ece(softmax(logits, t), labels.numpy())
    assert before > 0.15 and after < 0.05, (before, after)
    # the same predictions: temperature never changes the ranking
    assert (softmax(logits, t).argmax(1) == softmax(logits).argmax(1)).all()


def test_a_calibrated_model_keeps_a_temperature_near_one():
    logits, labels = overconfident_logits(1.0)
    assert fit_temperature(logits, labels) == pytest.approx(1.0, rel=0.1)


def test_a_checkpoint_keeps_its_temperature_and_refuses_a_bad_one(short_training, tmp_path):
    run, _ = short_training
    ckpt = tmp_path / "copy.ckpt"
    shutil.copy(json.loads((run / "metrics.json").read_text())["best_checkpoint"], ckpt)
    write_temperature(ckpt, 2.5)
    assert load_classifier(ckpt).temperature == 2.5
    raw = torch.load(ckpt, weights_only=True)
    raw["temperature"] = -1.0
    torch.save(raw, ckpt)
    with pytest.raises(ConfigError, match="temperature"):
        load_classifier(ckpt)


def test_training_fitted_a_temperature_into_the_best_checkpoint(short_training):
    run, _ = short_training
    summary = json.loads((run / "metrics.json").read_text())
    found = summary["calibration"]
    assert load_classifier(summary["best_checkpoint"]).temperature == pytest.approx(
        found["temperature"]
    )
    assert found["val_nll_after"] <= found["val_nll_before"] + 1e-6  # it minimises the NLL


# ---------------------------------------------------------------------- the CLI
def test_an_empty_folder_is_a_config_error_before_any_work(short_training, tmp_path):
    run, _ = short_training
    (tmp_path / "empty").mkdir()
    best = json.loads((run / "metrics.json").read_text())["best_checkpoint"]
    cfg = compose_config("predict", tmp_path, f"ckpt_path={best}", f"inputs={tmp_path / 'empty'}")
    with pytest.raises(ConfigError, match="inputs=.*no image"):
        predict(cfg)


@pytest.mark.parametrize(
    "override, key",
    [
        ("cam.method=Nope", "cam.method"),
        ("cam.target_layer=layer9", "cam.target_layer"),
        ("explain_style=blue", "explain_style"),
        ("top_k=abc", "top_k"),
        ("top_k=0", "top_k"),
        ("batch_size=0", "batch_size"),
        ("device=cuda:7", "device"),
        ("device=tpu", "device"),
        ("+preprocess.size=3", "preprocess.size"),
        ("preprocess.image_size=4", "preprocess.image_size"),
        ("prior_weight=-1", "prior_weight"),
        ("prior_weight=abc", "prior_weight"),
        ("places=/nonexistent/places.csv", "places"),
    ],
)
def test_every_setting_is_checked_before_a_photo_is_read(short_training, tmp_path, override, key):
    run, _ = short_training
    best = json.loads((run / "metrics.json").read_text())["best_checkpoint"]
    make_image_folder(tmp_path / "photos", {"a": 2})
    cfg = compose_config(
        "predict", tmp_path, f"ckpt_path={best}", f"inputs={tmp_path / 'photos'}", override
    )
    with pytest.raises(ConfigError, match=rf"^{key}\b"):
        predict(cfg)
    assert not list((tmp_path / "out").iterdir())  # nothing written: no work was done


def test_an_unreadable_first_photo_leaves_every_row_under_one_header(
    short_training, tmp_path, capsys
):
    run, _ = short_training
    best = json.loads((run / "metrics.json").read_text())["best_checkpoint"]
    photos = tmp_path / "photos"
    make_image_folder(photos, {"b": 2})
    (photos / "a_broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    cfg = compose_config(
        "predict",
        tmp_path,
        f"ckpt_path={best}",
        f"inputs={photos}",
        "explain=false",
        "num_workers=0",
        "progress=false",
    )
    predict(cfg)
    rows = list(csv.DictReader((tmp_path / "out" / "predictions.csv").open()))
    assert [r["status"] for r in rows] == ["unreadable", "ok", "ok"]
    assert rows[0]["prediction"] == "" and rows[1]["prediction"]
    assert "predict: 3 photos (1 unreadable)" in capsys.readouterr().out


def test_every_photo_with_a_cue_box_gets_its_cue_share_without_explanations(
    short_training, tmp_path
):
    run, _ = short_training
    best = json.loads((run / "metrics.json").read_text())["best_checkpoint"]
    root = make_image_folder(tmp_path / "photos", {"a": 5}, 48)
    rows = [Record(str(i), str(i), "1", "a", f"a/{i}.jpg", width=48, height=48) for i in range(5)]
    for r in rows[:3]:
        r.cue_x0, r.cue_y0, r.cue_x1, r.cue_y1 = 0.0, 0.0, 16.0, 16.0
    write_manifest(root / "manifest.csv", rows)
    cfg = compose_config(
        "predict",
        tmp_path,
        f"ckpt_path={best}",
        f"inputs={root}",
        "explain=false",
        "num_workers=0",
        "progress=false",
        "explain_max=0",
    )
    predict(cfg)
    got = list(csv.DictReader((tmp_path / "out" / "predictions.csv").open()))
    shares = [r["cue_share"] for r in got]
    assert all(0 <= float(v) <= 1 for v in shares[:3]) and shares[3:] == ["", ""]
    assert not (tmp_path / "out" / "explanations").exists()


@pytest.fixture(scope="module")
def test_split_photos(short_training, tmp_path_factory) -> tuple[Path, list[Record]]:
    """The run's test photos copied under a new root with their manifest rows, plus one
    corrupt photo."""
    run, _ = short_training
    data = run_data(run)
    src = Path(data["root"])
    tests = {r["path"] for r in csv.DictReader((run / "splits.csv").open()) if r["split"] == "test"}
    root = tmp_path_factory.mktemp("new_photos")
    rows = [r for r in read_manifest(src / "manifest.csv") if r.path in tests]
    for r in rows:
        (root / r.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / r.path, root / r.path)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    rows.append(Record("broken", "broken", "0", rows[0].taxon_name, "broken.jpg"))
    write_manifest(root / "manifest.csv", rows)
    return root, rows


@pytest.mark.slow
def test_with_the_defaults_every_photo_is_explained_over_several_batches(
    short_training, test_split_photos, tmp_path
):
    """The default explain_max (200) over more photos than one CAM batch (32): each batch's
    CAMs are drawn on its own photos (the other predict test explains 6)."""
    run, _ = short_training
    best = json.loads((run / "metrics.json").read_text())["best_checkpoint"]
    root, rows = test_split_photos
    good = [r for r in rows if r.photo_id != "broken"]
    assert 32 < len(good) <= 200
    res = run_cli(
        "predict.py", f"ckpt_path={best}", f"inputs={root / 'manifest.csv'}", tmp_path=tmp_path
    )
    assert res.returncode == 0, res.stderr[-4000:]
    (out,) = run_dirs(tmp_path / "logs")
    got = {r["photo_id"]: r for r in csv.DictReader((out / "predictions.csv").open())}
    tiles = [out / got[r.photo_id]["explanation"] for r in good]
    assert all(t.is_file() for t in tiles) and len(set(tiles)) == len(good)


@pytest.mark.slow
def test_a_checkpoint_alone_predicts_as_at_test_time_fuses_explains_and_exports(
    short_evaluation, test_split_photos, tmp_path
):
    run, evaluated = short_evaluation
    best = Path(json.loads((run / "metrics.json").read_text())["best_checkpoint"])
    alone = tmp_path / "received" / "model.ckpt"  # a colleague gets the file, nothing else
    alone.parent.mkdir()
    shutil.copy(best, alone)
    root, rows = test_split_photos
    res = run_cli(
        "predict.py",
        f"ckpt_path={alone}",
        f"inputs={root / 'manifest.csv'}",
        "export=true",
        "explain_max=6",
        "batch_size=5",
        tmp_path=tmp_path,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    (out,) = run_dirs(tmp_path / "logs")
    got = {r["photo_id"]: r for r in csv.DictReader((out / "predictions.csv").open())}
    summary = json.loads((out / "predictions.json").read_text())

    # the corrupt photo is reported, not fatal
    assert got["broken"]["status"] == "unreadable" and summary["unreadable"] == 1
    assert f"predict: {len(rows)} photos (1 unreadable)" in res.stdout

    # the same answers as evaluate.py's test loop inside the run (its data config: 32 px at
    # ratio 0.75), from the checkpoint alone
    tested = {r["photo_id"]: r for r in csv.DictReader((evaluated / "test_predictions.csv").open())}
    good = [r for r in rows if r.photo_id != "broken"]
    assert set(tested) == {r.photo_id for r in good}
    for r in good:
        row = got[r.photo_id]
        assert row["prediction"] == tested[r.photo_id]["prediction"], r.photo_id
        assert float(row["probability"]) == pytest.approx(
            float(tested[r.photo_id]["probability"]), abs=1e-5
        )
        assert row["uncertain"] == str(float(row["probability"]) < 0.5)
    assert summary["input_spec"]["image_size"] == 32 and summary["input_spec"]["crop_ratio"] == 0.75

    # one fused answer per observation, given to each of its photos; a photo alone is its own
    # (the fusion rule itself: test_fusion_is_the_softmax_of_the_mean_log_probability)
    obs = {o["observation_id"]: o for o in csv.DictReader((out / "observations.csv").open())}
    assert set(obs) == {r.observation_id for r in good}
    sizes = Counter(r.observation_id for r in good)
    assert max(sizes.values()) > 1
    for r in good:
        row = got[r.photo_id]
        assert row["observation_prediction"] == obs[r.observation_id]["prediction"]
        if sizes[r.observation_id] == 1:
            assert row["observation_prediction"] == row["prediction"]
    # every photo of the manifest has a place and date: the checkpoint's place prior was used
    assert summary["place_prior"]["used"]
    assert summary["place_prior"]["photos_with_place_or_date"] == {"manifest": len(good)}
    assert {row["not_in_classes"] for row in got.values() if row["status"] == "ok"} <= {
        "True",
        "False",
    }

    # explanations: captioned, upscaled tiles for the first photos
    tiles = [got[r.photo_id]["explanation"] for r in good[:6]]
    for tile in tiles:
        with Image.open(out / tile) as img:
            assert img.width == 256 and img.height > 256  # upscaled, a caption band below
            band = np.asarray(img.convert("L"))[256:]
            assert (band > 200).sum() > 50  # caption text pixels
    assert not got[good[6].photo_id].get("explanation")

    # the exported program runs without this project, from what model.json says, and agrees
    model = load_classifier(alone)
    meta = json.loads((out / "export" / "model.json").read_text())
    assert meta["class_names"] == model.class_names and summary["export"]["check"]["ok"]
    program = torch.export.load(str(out / "export" / "model.pt2")).module()
    inp = meta["input"]
    assert (inp["center_crop"], inp["resize_short_side"]) == (32, round(32 / 0.75))
    tf = v2.Compose(
        [
            v2.Resize(inp["resize_short_side"], antialias=True),
            v2.CenterCrop(inp["center_crop"]),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(inp["mean"], inp["std"]),
        ]
    )
    x = torch.stack([tf(Image.open(root / r.path).convert("RGB")) for r in good[:4]])
    with torch.no_grad():
        exported = torch.softmax(program(x) / meta["temperature"], 1)
    for r, p in zip(good[:4], exported):
        vision_answer = tested[r.photo_id].get("vision_prediction")
        assert model.class_names[int(p.argmax())] == (
            vision_answer or tested[r.photo_id]["prediction"]
        )
        # the export is the vision model alone (the place prior stays with the checkpoint)
        vision = tested[r.photo_id].get("vision_probability") or tested[r.photo_id]["probability"]
        assert float(p.max()) == pytest.approx(float(vision), abs=1e-4)
    assert math.isclose(summary["temperature"], model.temperature)
    card = (out / "export" / "MODEL.md").read_text()
    assert "## Classes and their training images" in card and "python predict.py" in card


def test_an_unsure_species_answer_falls_back_to_the_genus_then_the_family():
    from inat_lightning.prediction import RankAnswer

    names = ["Apis mellifera", "Apis cerana", "Bombus terrestris", "Vespa crabro"]
    lineages = {
        "Apis mellifera": {"genus": "Apis", "family": "Apidae"},
        "Apis cerana": {"genus": "Apis", "family": "Apidae"},
        "Bombus terrestris": {"genus": "Bombus", "family": "Apidae"},
        "Vespa crabro": {"genus": "Vespa", "family": "Vespidae"},
    }
    coarse = RankAnswer(names, lineages, threshold=0.7)
    assert coarse(np.array([0.8, 0.1, 0.05, 0.05])) == ("species", "Apis mellifera", 0.8)
    rank, name, p = coarse(np.array([0.4, 0.35, 0.15, 0.1]))  # two honeybees: the genus
    assert (rank, name) == ("genus", "Apis") and p == pytest.approx(0.75)
    rank, name, p = coarse(np.array([0.3, 0.2, 0.3, 0.2]))  # bees of two genera: the family
    assert (rank, name) == ("family", "Apidae") and p == pytest.approx(0.8)
    rank, name, _ = coarse(np.array([0.3, 0.05, 0.05, 0.6]))  # nothing reaches 0.7
    assert (rank, name) == ("species (unsure)", "Vespa crabro")
    plain = RankAnswer(names, None, threshold=0.7)  # no taxonomy: species only
    assert plain(np.array([0.4, 0.35, 0.15, 0.1]))[0] == "species (unsure)"
