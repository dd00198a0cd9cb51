"""Cue boxes for real data: COCO and CSV imports, the offline detector on real bundled photos,
and the dataset report (the bias visible before training)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inat_lightning.analysis.data_bias import dataset_report, flagged
from inat_lightning.analysis.detect import OpenCVPeople, TorchvisionDetector
from inat_lightning.data.cues import detect, import_coco, import_csv
from inat_lightning.data.manifest import Record, read_manifest, write_manifest
from inat_lightning.data.synthetic import SyntheticSpecies
from tests.helpers.cli import REPO


def photo_root(tmp_path: Path, n: int = 4) -> Path:
    root = tmp_path / "photos"
    (root / "Aus").mkdir(parents=True)
    records = []
    for i in range(n):
        Image.new("RGB", (120, 80), (i * 40, 90, 120)).save(root / "Aus" / f"{i}.jpg")
        records.append(
            Record(f"p{i}", f"o{i}", "1", "Aus", f"Aus/{i}.jpg", width=120, height=80,
                   extra={"my_note": f"note {i}"})
        )  # fmt: skip
    write_manifest(root / "manifest.csv", records)
    return root


def test_csv_boxes_round_trip_into_the_manifest(tmp_path):
    root = photo_root(tmp_path)
    boxes = tmp_path / "boxes.csv"
    boxes.write_text(
        "photo_id,x0,y0,x1,y1,label\np0,10,5,40,30,hand\np0,30,20,60,50,person\np2,0,0,120,80,person\n"
    )
    assert import_csv(root, boxes) == 2
    rows = {r.photo_id: r for r in read_manifest(root / "manifest.csv")}
    assert rows["p0"].cue_box == (10, 5, 60, 50)  # two boxes merged into the enclosing one
    assert rows["p0"].cue_label == "hand+person" and rows["p0"].cue_source == "csv:boxes.csv"
    assert rows["p2"].cue_box == (0, 0, 120, 80) and rows["p1"].cue_box is None
    assert rows["p3"].extra == {"my_note": "note 3"}  # the user's column kept
    assert (root / "manifest.csv.bak").is_file()


@pytest.mark.parametrize(
    "line, message",
    [
        ("nope,1,1,5,5,hand", "not in the manifest: nope"),
        ("p1,10,10,130,20,hand", "line 2: box .* out of bounds"),
        ("p1,30,10,20,20,hand", "out of bounds"),
        ("p1,a,1,5,5,hand", "line 2"),
    ],
)
def test_bad_csv_boxes_are_clear_errors_and_change_nothing(tmp_path, line, message):
    root = photo_root(tmp_path)
    before = (root / "manifest.csv").read_text()
    boxes = tmp_path / "boxes.csv"
    boxes.write_text(f"photo_id,x0,y0,x1,y1,label\n{line}\n")
    with pytest.raises(ValueError, match=message):
        import_csv(root, boxes)
    assert (root / "manifest.csv").read_text() == before


def test_coco_boxes_round_trip_with_a_label_filter(tmp_path):
    root = photo_root(tmp_path)
    coco = {
        "images": [
            {"id": 7, "file_name": "Aus/1.jpg", "width": 120, "height": 80},
            {"id": 8, "file_name": "elsewhere/3.jpg", "width": 120, "height": 80},
        ],
        "annotations": [
            {"image_id": 7, "bbox": [5, 6, 20, 10], "category_id": 1},
            {"image_id": 8, "bbox": [50, 10, 30, 30], "category_id": 1, "score": 0.9},
            {"image_id": 8, "bbox": [0, 0, 10, 10], "category_id": 2},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "boat"}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco))
    assert import_coco(root, path, labels=["person"]) == 2
    rows = {r.photo_id: r for r in read_manifest(root / "manifest.csv")}
    assert rows["p1"].cue_box == (5, 6, 25, 16)  # [x, y, w, h] -> corners
    assert rows["p3"].cue_box == (50, 10, 80, 40) and rows["p3"].cue_score == 0.9
    coco["images"].append({"id": 9, "file_name": "Bus/x.jpg"})
    path.write_text(json.dumps(coco))
    with pytest.raises(ValueError, match="not in the manifest: Bus/x.jpg"):
        import_coco(root, path)


def astronaut() -> Image.Image:
    skimage_data = pytest.importorskip("skimage.data")
    return Image.fromarray(skimage_data.astronaut())


def test_the_offline_detector_finds_the_person_on_a_real_photo_and_nothing_on_a_blank(tmp_path):
    detector = OpenCVPeople()
    hits = detector(astronaut())
    assert hits and all(d.label == "person" for d in hits)
    # one of the boxes covers her face (177..270, 67..160)
    assert any(
        x0 < 270 and x1 > 177 and y0 < 160 and y1 > 67 for x0, y0, x1, y1 in (d.box for d in hits)
    )
    assert detector(Image.new("RGB", (512, 512), (128, 128, 128))) == []
    # into a manifest: the person photo gets a box with the detector's name, the blank none
    root = tmp_path / "photos"
    (root / "x").mkdir(parents=True)
    astronaut().save(root / "x" / "a.jpg")
    Image.new("RGB", (512, 512), (128, 128, 128)).save(root / "x" / "b.jpg")
    write_manifest(
        root / "manifest.csv",
        [Record(n, n, "1", "x", f"x/{n}.jpg", width=512, height=512) for n in "ab"],
    )
    assert detect(root, detector, show_progress=False) == 1
    rows = {r.photo_id: r for r in read_manifest(root / "manifest.csv")}
    assert rows["a"].cue_source == "opencv-people" and rows["a"].cue_label == "person"
    assert rows["b"].cue_box is None


def test_the_torchvision_detector_reads_local_weights_only(tmp_path):
    import torch
    from torchvision.models import detection

    weights = tmp_path / "frcnn.pth"
    torch.save(
        detection.fasterrcnn_mobilenet_v3_large_fpn(
            weights=None, weights_backbone=None
        ).state_dict(),
        weights,
    )
    det = TorchvisionDetector(labels=("person", "boat"), weights=None, weights_path=str(weights))
    found = det(Image.new("RGB", (160, 120), (90, 120, 30)))
    assert all(d.label in ("person", "boat") and d.score >= 0.6 for d in found)
    with pytest.raises(ValueError, match="not COCO classes"):
        TorchvisionDetector(labels=("angler",), weights=None, weights_path=str(weights))
    small = TorchvisionDetector(weights=None, weights_path=str(weights), image_size=320)
    seen = small.net.transform([torch.rand(3, 120, 160)])[
        0
    ].image_sizes  # what the network is given: short side 320
    assert seen[0][0] == 320 and abs(seen[0][1] - 160 * 320 / 120) <= 1
    with pytest.raises(ValueError, match="image_size"):
        TorchvisionDetector(weights=None, weights_path=str(weights), image_size=8)


def test_the_dataset_report_counts_match_the_manifest_and_flag_the_cued_class(tmp_path):
    root = tmp_path / "biased"
    SyntheticSpecies(
        num_species=4, observations_per_species=30, image_size=48, cue_species=0
    ).generate(root, progress=False)
    records = read_manifest(root / "manifest.csv")
    rows = {r["class"]: r for r in dataset_report(records)}
    for name in {r.taxon_name for r in records}:
        mine = [r for r in records if r.taxon_name == name]
        assert rows[name]["photos"] == len(mine)
        assert rows[name]["cue_share"] == pytest.approx(
            sum(r.cue_box is not None for r in mine) / len(mine)
        )
        assert rows[name]["observers"] == len({r.observer_id for r in mine})
    assert rows["(all)"]["photos"] == len(records)
    assert flagged(list(rows.values())) == ["Piscis striatus"]
    areas = [
        (r.cue_x1 - r.cue_x0) * (r.cue_y1 - r.cue_y0) / (48 * 48)
        for r in records
        if r.taxon_name == "Piscis striatus" and r.cue_box
    ]
    assert rows["Piscis striatus"]["cue_area"] == pytest.approx(np.mean(areas))


def test_the_report_command_for_a_dataset_root(tmp_path):
    root = tmp_path / "biased"
    SyntheticSpecies(
        num_species=3, observations_per_species=20, image_size=32, cue_species=0
    ).generate(root, progress=False)
    cmd = [sys.executable, "-m", "inat_lightning.cues", "report", str(root)]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "**Piscis striatus:" in res.stdout and (root / "dataset_report.md").is_file()
    bad = subprocess.run(
        cmd[:-1] + [str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and "no manifest.csv" in bad.stderr
