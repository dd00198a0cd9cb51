"""Spurious-cue discovery on constructed inputs: regions from a CAM whose peaks are known,
boxes mapped back to photo pixels, clusters of planted descriptions, and the whole pipeline on a
hand-wired network that tells a class by a green square nobody boxed."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from inat_lightning.analysis.audit import AuditConfig, CueAudit
from inat_lightning.analysis.discover import (
    BOX_COLUMNS,
    COLUMNS,
    SUSPECTED,
    DiscoverConfig,
    DiscoveredCue,
    Discovery,
    Proposal,
    agreement,
    box_in_photo,
    box_rows,
    cam_regions,
    cluster_regions,
    cue_rows,
    discover_split,
    examined,
    iou,
    look_scores,
    presence_gap,
    presence_p,
    save_gallery,
    separation,
    shares,
    verdict,
)
from inat_lightning.analysis.gradcam import CamSetting
from inat_lightning.analysis.report import discovery_findings
from inat_lightning.data.cues import import_csv
from inat_lightning.data.manifest import Record, read_manifest, write_manifest
from inat_lightning.data.spec import InputSpec
from inat_lightning.data.transforms import box_after_eval
from tests.helpers.cli import REPO


def test_regions_follow_the_cam_s_peaks_with_bounded_sides():
    cam = np.zeros((40, 40), np.float32)
    cam[5:11, 30:36] = 1.0  # the strongest blob: 6 x 6
    cam[25:27, 3:5] = 0.6  # a weaker, tiny one: grown to the smallest side
    boxes = cam_regions(cam, k=3, threshold=0.5, min_side=4, max_side=20)
    assert boxes[0] == (30.0, 5.0, 36.0, 11.0)
    x0, y0, x1, y1 = boxes[1]
    assert (x1 - x0, y1 - y0) == (4, 4) and x0 <= 3 and x1 >= 5 and y0 <= 25 and y1 >= 27
    assert len(boxes) == 2  # nothing left after two: no third region is made up
    wide = np.zeros((40, 40), np.float32)
    wide[10:12, :] = 1.0  # a stripe across the photo: cut to the largest side, at its peak
    (box,) = cam_regions(wide, k=1, threshold=0.5, min_side=4, max_side=20)
    assert box[2] - box[0] == 20 and box[0] == 0


@pytest.mark.parametrize(("size", "ratio"), [((120, 80), 0.875), ((50, 90), 1.0)])
def test_a_region_maps_back_to_the_photo_s_pixels(size, ratio):
    spec = InputSpec(32, ratio)
    photo = Image.new("RGB", size)
    box = (12.0, 7.0, 30.0, 22.0)
    there = box_after_eval(box, *size, 32, ratio)
    assert box_in_photo(there, photo, spec) == pytest.approx(box)


def test_shares_count_photos_of_each_class_examined():
    labels = np.array([0] * 10 + [1] * 20 + [2] * 10)
    held = set(range(6)) | {10, 11}  # 6 of class 0's 10 photos, 2 of the 30 others
    examined_per_class = Counter(labels.tolist())
    assert shares(labels, held, examined_per_class, 0) == (0.6, pytest.approx(2 / 30))
    assert shares(labels, held, examined_per_class, 1) == (0.1, pytest.approx(6 / 20))


def test_planted_crops_form_one_cluster_each_and_a_lone_region_is_noise():
    rng = np.random.default_rng(0)
    hands = rng.normal([1, 0, 0, 0], 0.02, (12, 4))
    rings = rng.normal([0, 1, 0, 0], 0.02, (9, 4))
    lone = np.array([[0, 0, 1, 0]])
    found = cluster_regions(np.concatenate([hands, rings, lone]).astype(np.float32), 5)
    assert len(set(found[:12])) == 1 and len(set(found[12:21])) == 1
    assert found[0] != found[12] and found[0] >= 0 and found[12] >= 0 and found[21] == -1


def test_agreement_with_known_boxes_counts_overlap_and_centres_per_discovered_label():
    records = [
        Record("a", "a", "1", "x", "x/a.jpg", cue_x0=0, cue_y0=0, cue_x1=10, cue_y1=10),
        Record("b", "b", "1", "x", "x/b.jpg", cue_x0=0, cue_y0=40, cue_x1=40, cue_y1=44),
        Record("c", "c", "1", "x", "x/c.jpg"),  # nobody boxed it: not counted
    ]
    rows = [
        {"photo_id": "a", "x0": 0, "y0": 0, "x1": 10, "y1": 12, "label": "discovered_1"},
        # a thin bar found by a square, coarse region: its centre misses, its IoU is low
        {"photo_id": "b", "x0": 10, "y0": 28, "x1": 26, "y1": 44, "label": "discovered_1"},
        {"photo_id": "c", "x0": 0, "y0": 0, "x1": 5, "y1": 5, "label": "discovered_2"},
    ]
    assert iou((0, 0, 10, 10), (0, 0, 10, 12)) == pytest.approx(100 / 120)
    found = agreement(rows, records)
    assert found == {"discovered_1": {"boxed_photos": 2, "overlapping": 0.5, "centred": 0.5}}


def test_a_verdict_needs_a_measured_counterfactual_and_says_what_was_not_measured():
    cfg = DiscoverConfig()
    cue = DiscoveredCue(1, "striatus", 3, 12, 0.6, 0.0, 60.0, 0.9, None, None, "", "")
    cue.acc_drop = 0.5
    assert verdict(cue, cfg) == ""  # the presence gap's p-value not measured: not suspected
    cue.presence_p, cue.acc_drop = 0.001, None
    assert verdict(cue, cfg) == ""  # gates passed, nothing measured: not suspected
    cue.acc_drop = 0.5  # the look-alike had no photo examined: no transplant
    assert verdict(cue, cfg) == SUSPECTED
    cue.verdict = SUSPECTED
    (line,) = discovery_findings({"rows": cue_rows([cue])})
    assert "drop when removed beyond the hole control +0.50" in line
    assert "pasted onto the look-alike photos: not measured" in line
    cue.look_separation = 0.55  # its look as common on the look-alike's photos: not a shortcut
    assert verdict(cue, cfg) == ""
    cue.look_separation = 0.9
    assert verdict(cue, cfg) == SUSPECTED
    assert (
        "its photos apart from the look-alike's at AUC 0.90"
        in discovery_findings({"rows": cue_rows([cue])})[0]
    )
    cue.presence_gap = None  # on every photo of its class: nothing to compare
    assert verdict(cue, cfg) == ""


def planted_maps(has_look: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, list]:
    """``(N, 4, 8, 8)`` activations: a noisy background everywhere and, on the photos marked in
    ``has_look``, a 2 x 2 window of another pattern (the look) at a random place; with each
    such photo's window as a 16 px box of a 64 px input."""
    maps = torch.tensor(rng.uniform(0, 0.3, (len(has_look), 4, 8, 8)), dtype=torch.float32)
    maps[:, 1] += 1.0  # the background's own pattern
    boxes = []
    for i in np.flatnonzero(has_look):
        y, x = (int(v) for v in rng.integers(0, 7, 2))
        maps[i, :, y : y + 2, x : x + 2] = torch.tensor([1.0, 0.1, 0.1, 0.8])[:, None, None]
        boxes.append(Proposal(int(i), (8.0 * x, 8.0 * y, 8.0 * x + 16, 8.0 * y + 16)))
    return maps, boxes


def test_a_cluster_s_look_is_found_wherever_it_is_and_tells_photos_apart_only_if_they_lack_it():
    rng = np.random.default_rng(0)
    # photos 0-7 show the look (the cluster found it on 0-3), 8-19 do not
    maps, members = planted_maps(np.array([True] * 8 + [False] * 12), rng)
    scores = look_scores(maps, members[:4], 64, range(20))
    assert scores[:8].min() > 0.99 and scores[8:].max() < 0.8  # found where the CAM was not
    assert separation(scores[:4], scores[8:]) == 1.0  # the look-alike's photos lack it
    assert separation(scores[:4], scores[4:8]) == pytest.approx(0.5, abs=0.3)
    assert separation(scores[:4], scores[:0]) is None  # no photo of the look-alike: not measured
    # a member photo is scored against the other members' mean look, not its own: alone in the
    # cluster, a look that is nowhere else scores as if it were no member at all
    lone = Proposal(8, (0.0, 0.0, 16.0, 16.0))
    alone = look_scores(maps, [*members[:4], lone], 64, [8])[0]
    assert alone == pytest.approx(look_scores(maps, members[:4], 64, [8])[0]) and alone < 0.8


def test_examined_photos_are_bounded_most_photographed_classes_first():
    records = [Record(f"{c}{i}", f"{c}{i}", "1", c, f"{c}/{i}.jpg") for c, n in
               (("a", 5), ("b", 9), ("c", 2)) for i in range(n)]  # fmt: skip
    cfg = DiscoverConfig(max_classes=2, max_photos_per_class=4)
    kept = examined(records, ["a", "b", "c"], cfg)
    assert [r.photo_id for r in kept] == ["a0", "a1", "a2", "a3", "b0", "b1", "b2", "b3"]


class FishAndSquare(torch.nn.Module):
    """Hand-wired: feature 0 sees red (the fish, on every photo), feature 1 green (a square);
    class 0 = fish + 20 x square - 0.3, class 1 = fish. A photo is class 0 by its square alone."""

    def __init__(self) -> None:
        super().__init__()
        conv = torch.nn.Conv2d(3, 2, 1, bias=False)
        conv.weight.data = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])[:, :, None, None]
        self.layer1 = torch.nn.Sequential(conv, torch.nn.ReLU())
        self.fc = torch.nn.Linear(2, 2)
        self.fc.weight.data = torch.tensor([[1.0, 20.0], [1.0, 0.0]])
        self.fc.bias.data = torch.tensor([-0.3, 0.0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layer1(x).mean((2, 3)))


def photos_with_squares(n: int, square: bool, rng: np.random.Generator) -> list[Image.Image]:
    """Blue photos with a red fish (a 12 px block, somewhere) and, when ``square``, a green
    6 px square somewhere else."""
    out = []
    for _ in range(n):
        photo = Image.new("RGB", (32, 32), (0, 0, 255))
        draw = ImageDraw.Draw(photo)
        fx, fy = (int(v) for v in rng.integers(0, 8, 2))
        draw.rectangle((fx, fy, fx + 11, fy + 11), fill=(255, 0, 0))
        if square:
            sx, sy = (int(v) for v in rng.integers(18, 26, 2))
            draw.rectangle((sx, sy, sx + 5, sy + 5), fill=(0, 255, 0))
        out.append(photo)
    return out


def cued_set(rng: np.random.Generator) -> tuple[list[Image.Image], np.ndarray]:
    """Class 0 ("striatus"): 12 photos with the square, 6 without (the angler not always
    there); class 1 ("punctatus"): 12 without."""
    photos = photos_with_squares(12, True, rng) + photos_with_squares(18, False, rng)
    return photos, np.array([0] * 18 + [1] * 12)


def test_presence_gap_is_the_accuracy_with_the_region_minus_without():
    right = np.array([True, True, True, False, False, True, True])
    own = np.array([0, 1, 2, 3, 4])  # the class's photos; 5 and 6 are another class's
    assert presence_gap(own, {0, 1, 3}, right) == pytest.approx(2 / 3 - 1 / 2)
    assert presence_gap(own, {0, 1, 2, 3, 4}, right) is None  # on every photo: nothing to compare
    assert presence_gap(own, {5, 6}, right) is None


def test_a_presence_gap_on_a_photo_or_two_is_chance():
    own = np.arange(14)
    # 13 photos with the region all right, the one without wrong: a gap of 1.0, p = 1/14
    right = np.array([True] * 13 + [False])
    assert presence_gap(own, set(range(13)), right) == 1.0
    assert presence_p(own, set(range(13)), right) == pytest.approx(1 / 14)
    # 9 with it all right, 5 without all wrong: p = 1 / C(14, 5)
    right = np.array([True] * 9 + [False] * 5)
    assert presence_p(own, set(range(9)), right) == pytest.approx(1 / 2002)
    assert presence_p(own, set(range(9)), ~right) == 1.0  # right without it: no evidence
    assert presence_p(own, set(range(14)), right) is None


def test_discovery_finds_the_square_a_class_is_told_by_and_not_the_fish_every_photo_has(
    tmp_path,
):
    photos, labels = cued_set(np.random.default_rng(0))
    spec = InputSpec(32, 1.0)
    cfg = DiscoverConfig(min_cluster_photos=5, cam=CamSetting(target_layer="layer1"))
    discovery = Discovery(cfg, spec)
    net = FishAndSquare()
    # told by the square alone: the six striatus photos without it are taken for punctatus
    assert net(discovery._tensor(photos)).argmax(1).tolist() == [0] * 12 + [1] * 18
    cues = discovery.run(net, photos, labels, ["striatus", "punctatus"])
    top = cues[0]
    assert (top.rank, top.class_, top.verdict) == (1, "striatus", SUSPECTED)
    assert top.share_in_class == pytest.approx(12 / 18) and top.share_elsewhere == 0.0
    assert top.presence_gap == 1.0  # right on every photo with it, wrong on every one without
    assert top.acc_drop == 1.0 and top.transplant_flip == 1.0 and top.lookalike == "punctatus"
    assert all(q.verdict != SUSPECTED for q in cues[1:])  # the fish is on every photo
    # the boxes are the squares: in the photos' pixels, as sharp as the 1 x 1 layer's CAM
    rows = box_rows(cues, [f"p{i}" for i in range(30)], photos, spec)
    assert len(rows) == 12 and {r["label"] for r in rows} == {"discovered_1"}
    assert min(square_overlaps(rows, photos)) == 1.0
    assert save_gallery(cues, discovery, tmp_path / "d.png").stat().st_size > 1000


def square_overlaps(rows: list[dict], photos: list[Image.Image]) -> list[float]:
    """IoU of each written box with the green square of its photo."""
    out = []
    for r in rows:
        ys, xs = np.nonzero((np.asarray(photos[int(r["photo_id"][1:])]) == (0, 255, 0)).all(-1))
        truth = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        out.append(iou(tuple(float(r[k]) for k in ("x0", "y0", "x1", "y1")), truth))
    return out


class CoarseFishAndSquare(FishAndSquare):
    """:class:`FishAndSquare` whose explained layer pools 8 x 8: its CAM is 4 x 4 at 32 px,
    coarser than the 6 px square, as a deep layer's CAM is for a small cue."""

    def __init__(self) -> None:
        super().__init__()
        self.layer1 = torch.nn.Sequential(self.layer1, torch.nn.AvgPool2d(8))


def test_boxes_are_drawn_finer_than_a_coarse_cam_by_occlusion():
    photos, labels = cued_set(np.random.default_rng(0))
    found = {}
    for grid in (0, 8):
        cfg = DiscoverConfig(refine_grid=grid, cam=CamSetting(target_layer="layer1"))
        cues = Discovery(cfg, InputSpec(32, 1.0)).run(
            CoarseFishAndSquare(), photos, labels, ["striatus", "punctatus"]
        )
        assert cues[0].verdict == SUSPECTED
        rows = box_rows(cues, [f"p{i}" for i in range(30)], photos, InputSpec(32, 1.0))
        found[grid] = np.array(square_overlaps(rows, photos))
    # the CAM's boxes (its 8 px cells) against the refined ones, photo by photo
    assert found[0].min() < 0.2 and (found[8] >= found[0]).all()
    assert found[8].min() >= 0.3 and found[8].mean() >= found[0].mean() + 0.05


def test_a_square_on_every_photo_of_its_class_cannot_be_told_from_the_species():
    """A limit, said in docs/evaluate.md: a region on every photo of its class (and none elsewhere)
    leaves no photo of the class to compare with; the species itself looks the same."""
    rng = np.random.default_rng(0)
    photos = photos_with_squares(12, True, rng) + photos_with_squares(12, False, rng)
    labels = np.array([0] * 12 + [1] * 12)
    cfg = DiscoverConfig(min_cluster_photos=5, cam=CamSetting(target_layer="layer1"))
    cues = Discovery(cfg, InputSpec(32, 1.0)).run(FishAndSquare(), photos, labels, ["a", "b"])
    square = max(cues, key=lambda q: q.acc_drop or 0.0)
    assert square.share_in_class == 1.0 and square.acc_drop == 1.0  # causal, but on every photo
    assert square.presence_gap is None and all(q.verdict != SUSPECTED for q in cues)


def test_a_square_the_look_alike_shows_as_often_is_not_a_shortcut_though_the_model_uses_it():
    """The square on most of both classes' photos: the network still takes every photo
    with it for class 0, so the CAM of class 0 finds it only on class 0's photos (over-
    represented there, a presence gap, causal) — but its look is on class 1's photos as often:
    the data does not tell class 0 by it, the model guesses by it (twins drawn alike)."""
    rng = np.random.default_rng(0)
    photos = photos_with_squares(12, True, rng) + photos_with_squares(6, False, rng)
    photos += photos_with_squares(10, True, rng) + photos_with_squares(2, False, rng)
    labels = np.array([0] * 18 + [1] * 12)
    cfg = DiscoverConfig(min_cluster_photos=5, cam=CamSetting(target_layer="layer1"))
    cues = Discovery(cfg, InputSpec(32, 1.0)).run(FishAndSquare(), photos, labels, ["a", "b"])
    square = next(q for q in cues if q.class_ == "a" and q.acc_drop == 1.0)
    assert square.share_elsewhere == 0.0 and square.presence_gap == 1.0  # what the CAM shows
    assert square.transplant_flip == pytest.approx(2 / 12)  # the 2 of b without it flip
    # its squares tie with b's 10 (0.5 each) and beat b's 2 plain photos (1 each)
    assert square.look_separation == pytest.approx((10 * 0.5 + 2) / 12, abs=0.01)
    assert square.verdict == ""
    assert all(q.verdict != SUSPECTED for q in cues)
    # the same network where only class a has the square: suspected, its look apart
    photos, labels = cued_set(np.random.default_rng(0))
    cues = Discovery(cfg, InputSpec(32, 1.0)).run(FishAndSquare(), photos, labels, ["a", "b"])
    assert cues[0].verdict == SUSPECTED and cues[0].look_separation == 1.0


def test_a_square_on_every_photo_of_every_class_is_not_a_shortcut():
    rng = np.random.default_rng(1)
    photos = photos_with_squares(24, True, rng)
    labels = np.array([0] * 12 + [1] * 12)
    cfg = DiscoverConfig(min_cluster_photos=5, cam=CamSetting(target_layer="layer1"))
    cues = Discovery(cfg, InputSpec(32, 1.0)).run(FishAndSquare(), photos, labels, ["a", "b"])
    assert cues and all(q.verdict != SUSPECTED for q in cues)


def test_discover_import_audit_is_a_closed_loop(tmp_path):
    """The suspected regions, written as ``discovered_boxes.csv``, imported into the manifest by
    ``cues import-csv``, are measured by the cue audit: it finds the class relies on them."""
    photos, labels = cued_set(np.random.default_rng(2))
    names = ["striatus", "punctatus"]
    root = tmp_path / "photos"
    records = []
    for i, photo in enumerate(photos):
        name = names[labels[i]]
        (root / name).mkdir(parents=True, exist_ok=True)
        photo.save(root / name / f"{i}.png")
        records.append(Record(f"p{i}", f"o{i}", "1", name, f"{name}/{i}.png", width=32, height=32))
    write_manifest(root / "manifest.csv", records)
    cfg = DiscoverConfig(min_cluster_photos=5, cam=CamSetting(target_layer="layer1"))
    spec, net = InputSpec(32, 1.0), FishAndSquare()
    found = discover_split(net, root, records, names, spec, cfg, tmp_path, 10**6)
    assert [r["verdict"] for r in found["rows"]][0] == SUSPECTED and found["boxes"] == 12
    assert (tmp_path / "discovered_cues.png").is_file()
    assert import_csv(root, tmp_path / "discovered_boxes.csv") == 12
    boxed = read_manifest(root / "manifest.csv")
    assert sum(r.cue_box is not None for r in boxed) == 12
    audit = CueAudit(AuditConfig(cam=CamSetting(target_layer="layer1"), min_images=5))
    rows = {r.class_: r for r in audit.run(net, root, boxed, names, spec)}
    assert rows["striatus"].verdict.startswith("RELIES ON THE CUE")
    assert rows["striatus"].acc_drop == 1.0 and rows["striatus"].flip_rate_lookalike == 1.0


@pytest.mark.slow
def test_the_discover_command_examines_a_checkpoint_s_classes_in_a_dataset(
    short_training, shared_data_dir, tmp_path
):
    run, _ = short_training
    best = json.loads((run / "metrics.json").read_text())["best_checkpoint"]
    root, out = shared_data_dir / "synthetic", tmp_path / "found"
    argv = ["-m", "inat_lightning.cues", "discover", str(root), best, "--out", str(out)]
    argv += ["--max-classes", "2", "--max-photos-per-class", "10"]
    res = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    # the run's test photos (its splits.csv beside the checkpoints), the two classes with the
    # most of them, at most 10 each
    with (run / "splits.csv").open(newline="") as f:
        test = Counter(r["taxon_name"] for r in csv.DictReader(f) if r["split"] == "test")
    top = sorted(test.items(), key=lambda kv: (-kv[1], kv[0]))[:2]
    expected = sum(min(10, n) for _, n in top)
    assert f"the test photos of {(run / 'splits.csv').resolve()}" in res.stdout
    assert f"{expected} photos of 2 classes examined" in res.stdout
    with (out / "discovered_cues.csv").open() as f:
        assert tuple(csv.DictReader(f).fieldnames or ()) == COLUMNS
    with (out / "discovered_boxes.csv").open() as f:
        assert tuple(csv.DictReader(f).fieldnames or ()) == BOX_COLUMNS  # import-csv's format
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    argv[4] = str(bad)
    res = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.startswith("error: ckpt=")
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_on_real_photos_discovery_finds_the_planted_cue_nobody_told_it_of(tmp_path):
    """Trained for real (the benchmark's recipe, bench/bench_discover.py) on real photos with
    petals planted on 70 % of one class's photos, which only they tell from its twin. Margins
    from docs/benchmarks.md (benchmark 14, 5 seeds): the top suspected shortcut of the class
    overlaps the planted boxes on 100 % of its photos on every seed (asserted: >= 70 %), its
    presence gap 0.59-0.96 (asserted: >= 0.4) at p <= 0.007 (asserted: <= 0.05, the verdict's
    bound), its look separation 0.97-1.00 (asserted: >= 0.8)."""
    from bench.bench_discover import EVALUATE, PER_CLASS, PLANTED_TRAIN
    from inat_lightning.data.planted import CUED, make_planted
    from tests.helpers.cli import run_cli, run_dirs

    root = make_planted(tmp_path / "photos", "petals", seed=0, per_class=PER_CLASS)
    res = run_cli("train.py", *PLANTED_TRAIN, f"data.root={root}", "seed=0", tmp_path=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    (run,) = run_dirs(tmp_path / "logs")
    best = json.loads((run / "metrics.json").read_text())["best_checkpoint"]
    res = run_cli("evaluate.py", f"ckpt_path={best}", *EVALUATE, tmp_path=tmp_path / "e")
    assert res.returncode == 0, res.stderr[-3000:]
    (out,) = run_dirs(tmp_path / "e" / "logs")
    found = json.loads((out / "metrics.json").read_text())["discovery"]
    top = next(r for r in found["rows"] if r["class"] == CUED)
    assert top["verdict"] == SUSPECTED, found["rows"]
    assert top["presence_gap"] >= 0.4 and top["presence_p"] <= 0.05
    assert top["look_separation"] >= 0.8
    assert found["overlap_with_known_boxes"][f"discovered_{top['rank']}"]["overlapping"] >= 0.7
    report = (out / "report.md").read_text()
    assert "## Discovered cues (nobody boxed them)" in report and f"{CUED}: {SUSPECTED}" in report
