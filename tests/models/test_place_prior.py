"""Where and when (the place prior), "not one of mine" (the out-of-set rule) and answers at a
coarser rank (risk-coverage): each mechanism on inputs made for it."""

from __future__ import annotations

import io
import logging
import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from inat_lightning.analysis.coverage import RankAnswer, at_threshold, risk_coverage
from inat_lightning.analysis.open_set import auroc, open_set_report
from inat_lightning.data.geo import Place, day_of_year, encode, exif_place, read_places
from inat_lightning.data.manifest import Record, read_manifest, write_manifest
from inat_lightning.data.synthetic import SyntheticSpecies
from inat_lightning.models.checkpoint import load_classifier
from inat_lightning.models.open_set import OpenSetRule, open_set_score
from inat_lightning.models.prior import PlacePrior, PriorFit, fused_log_probabilities
from inat_lightning.post_fit import fit_prior
from inat_lightning.prediction import answer, photo_places
from inat_lightning.scrape.inat_api import observation_place
from tests.house.test_untrusted_files import small_checkpoint

# ---------------------------------------------------------------------- places and seasons


def test_a_place_drops_obscured_coordinates_but_keeps_the_date():
    r = Record("1", "1", "1", "A b", "a/1.jpg", latitude=45.0, longitude=6.0)
    r.observed_on = "2024-02-01"
    assert Place.of(r) == Place(45.0, 6.0, 32)
    r.coords_obscured = True
    assert Place.of(r) == Place(None, None, 32) and Place.of(r).known
    assert not Place.of(Record("2", "2", "1", "A b", "a/2.jpg")).known


@pytest.mark.parametrize(
    "text, day",
    [("2024-12-31", 366), ("2023-12-31", 365), ("2024-03-01T10:00:00+02:00", 61),
     ("2024:03:01 10:00:00", 61), ("2024-02-30", None), ("soon", None), ("", None),
     ("2999-01-01", None), ("2024-03-01garbage", None)],
)  # fmt: skip
def test_day_of_year_reads_iso_and_exif_dates_and_nothing_else(text, day):
    assert day_of_year(text) == day


def test_the_encoding_has_no_seam_at_the_date_line_or_new_year():
    near = encode([Place(10.0, 179.9, 365), Place(10.0, -179.9, 1)])
    far = encode([Place(10.0, 0.0, 182)])
    assert np.abs(near[0] - near[1]).max() < 0.03  # a day and a fraction of a degree apart
    assert np.abs(near[0, :3] - far[0, :3]).max() > 1.0  # the other side of the globe
    assert encode([Place()]).tolist() == [[0.0] * 7]  # unknown: zeros, flags 0


def _jpeg_with_gps(lat: tuple, lat_ref: str, lon: tuple, lon_ref: str, taken: str) -> bytes:
    img = Image.new("RGB", (32, 32), (120, 80, 40))
    exif = Image.Exif()
    exif.get_ifd(0x8825).update({1: lat_ref, 2: lat, 3: lon_ref, 4: lon})
    exif.get_ifd(0x8769)[36867] = taken
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    return buf.getvalue()


def test_exif_gps_and_date_are_read_and_garbage_is_no_place(tmp_path):
    photo = tmp_path / "p.jpg"
    photo.write_bytes(
        _jpeg_with_gps((33.0, 51.0, 36.0), "S", (151.0, 12.0, 0.0), "E", "2024:07:04 08:00:00")
    )
    found = exif_place(photo)
    assert found.latitude == pytest.approx(-33.86) and found.longitude == pytest.approx(151.2)
    assert found.day_of_year == 186
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(_jpeg_with_gps((95.0, 0.0, 0.0), "N", (1.0, 0.0, 0.0), "W", "never"))
    assert exif_place(bad) == Place()  # latitude out of range, no date
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8\xff\xe1 not exif")
    assert exif_place(tmp_path / "junk.jpg") == Place()


def placed_photos(tmp_path: Path) -> tuple[Path, list[Record]]:
    """A resolved inputs root and its two photos' records, as ``collect_inputs`` gives them."""
    root = (tmp_path / "photos").resolve()
    return root, [Record(p, p, "", "", p) for p in ("a/0.jpg", "a/1.jpg")]


@pytest.mark.parametrize(
    "header",
    ["path,latitude,longitude,observed_on", "path,lat,lng,observed_on", "Path,Lat,Lon,Observed_on",
     "path,lat,long,observed_on", "path,decimalLatitude,decimalLongitude,eventDate"],
)  # fmt: skip
@pytest.mark.parametrize("spelling", ["relative", "dotted", "absolute"])
def test_a_places_csv_takes_common_column_names_and_any_spelling_of_a_path(
    tmp_path, caplog, header, spelling
):
    root, records = placed_photos(tmp_path)
    named = {"relative": "a/0.jpg", "dotted": "./a//0.jpg", "absolute": str(root / "a" / "0.jpg")}
    places = tmp_path / "places.csv"
    places.write_text(f"{header}\n{named[spelling]},45.5,6.1,2024-06-01\na/1.jpg,,,\n")
    with caplog.at_level("INFO"):
        found = read_places(places).match(root, records)
    assert found == [Place(45.5, 6.1, 153), Place()]
    assert "places: 2 of 2 rows matched a photo" in caplog.text and "WARNING" not in caplog.text


def test_places_csv_rows_that_match_no_photo_are_counted_and_named(tmp_path, caplog):
    root, records = placed_photos(tmp_path)
    places = tmp_path / "places.csv"
    others = "".join(f"/elsewhere/{i}.jpg,1,2\n" for i in range(12))
    places.write_text(f"path,lat,lng\na/1.jpg,1,2\n{others}")
    with caplog.at_level("INFO"):
        found = read_places(places).match(root, records)
    assert found == [None, Place(1.0, 2.0, None)]
    count = "places: 1 of 13 rows matched a photo (the inputs name their photos by path, like"
    assert f"{count} 'a/0.jpg')" in caplog.text
    assert "row 3 (path '/elsewhere/0.jpg') matches no photo" in caplog.text
    assert "row 12 (path" in caplog.text and "row 13 (path" not in caplog.text
    assert "2 more rows match no photo" in caplog.text


BAD_PLACES = {
    "latitude column alone": (
        "path,lat\na/0.jpg,1\n",
        r"a latitude column \('lat'\) but no longitude",
    ),
    "longitude column alone": ("path,lng\na/0.jpg,1\n", r"a longitude column \('lng'\) but no lat"),
    "two latitude columns": ("path,lat,latitude,lng\n", r"columns 'latitude' and 'lat' both name"),
    "no place column": (
        "path,notes\na/0.jpg,x\n",
        r"no place or date column: .*\(found 'path', 'n",
    ),
    "no path column": ("file,lat,lng\na/0.jpg,1,2\n", r"needs a path or photo_id column"),
    "latitude alone": (
        "path,lat,lng\na/0.jpg,45,\n",
        r"row 2, column lng: empty, but the latitude",
    ),
    "longitude alone": (
        "path,lat,lng\na/0.jpg,,6\n",
        r"row 2, column lat: empty, but the longitude",
    ),
    "latitude 91": ("photo_id,lat,lng\n1,45,6\n2,91,6\n", r"row 3, column lat: '91' is not in"),
    "latitude as text": ("path,lat,lng\na/0.jpg,north,6\n", r"row 2, column lat: 'north' is not a"),
    "date as text": ("path,observed_on\na/0.jpg,yesterday\n", r"row 2, column observed_on: 'yeste"),
    "twice, other places": (
        "path,lat,lng\na/0.jpg,1,2\n./a/0.jpg,1,3\n",
        r"rows 2 and 3 name 'a/0",
    ),
    "twice, absolute": (
        "path,lat,lng\na/0.jpg,1,2\n{root}/a/0.jpg,1,3\n",
        r"rows 2 and 3 name 'a/",
    ),
}


@pytest.mark.parametrize("text, error", BAD_PLACES.values(), ids=BAD_PLACES)
def test_a_bad_places_csv_is_one_line_naming_the_file_and_row(tmp_path, text, error):
    """A bad header, cell or pair of rows: nothing dropped, nothing taken at random."""
    root, records = placed_photos(tmp_path)
    places = tmp_path / "places.csv"
    places.write_text(text.format(root=root))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(places))}: .*{error}"):
        read_places(places).match(root, records)


def test_the_manifest_keeps_place_columns_and_refuses_a_latitude_out_of_range(tmp_path):
    r = Record("1", "1", "1", "A b", "a/1.jpg", latitude=-12.5, longitude=130.25)
    r.pos_accuracy, r.coords_obscured, r.captive = 20.0, False, True
    write_manifest(tmp_path / "manifest.csv", [r])
    (back,) = read_manifest(tmp_path / "manifest.csv")
    assert (back.latitude, back.longitude, back.pos_accuracy) == (-12.5, 130.25, 20.0)
    assert (back.coords_obscured, back.captive) == (False, True)
    text = (tmp_path / "manifest.csv").read_text().replace("-12.5", "-120.5")
    (tmp_path / "manifest.csv").write_text(text)
    with pytest.raises(ValueError, match=r"row 2, column latitude: '-120.5' is not in"):
        read_manifest(tmp_path / "manifest.csv")


def test_the_api_place_is_read_from_geojson_or_location_and_garbage_is_empty():
    point = {"geojson": {"coordinates": [4.36, 50.65]}, "positional_accuracy": 23}
    assert observation_place(point)["latitude"] == 50.65
    assert observation_place({"location": "50.65,4.36"})["longitude"] == 4.36
    hidden = observation_place({"location": "1,2", "geoprivacy": "obscured", "captive": True})
    assert hidden["coords_obscured"] is True and hidden["captive"] is True
    junk = [
        {"location": "north,east"},
        {"geojson": {"coordinates": ["x", 95]}},
        {"location": "91,2"},
        {"geojson": "Point(1 2)", "positional_accuracy": -3},
    ]
    for record in junk:
        found = observation_place(record)
        assert found["latitude"] is None and found["longitude"] is None
        assert found["pos_accuracy"] is None


# ---------------------------------------------------------------------- the prior


def _twin_world(seed: int, observations: int = 60):
    """Places and labels of a cryptic synthetic world (0/1 and 2/3 are twins), split by
    observation parity into train and test."""
    world = SyntheticSpecies(
        num_species=6, cryptic=True, observations_per_species=observations, seed=seed
    )
    out = {"train": ([], []), "test": ([], [])}
    for k in range(world.num_species):
        for obs in range(world.observation_count(k)):
            w = world.where_and_when(k, obs)
            place = Place.of(Record("x", "x", "x", "x", "x.jpg", **w))
            places, labels = out["test" if obs % 4 == 0 else "train"]
            places.append(place)
            labels.append(k)
    return out, world.num_species


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_fused_answer_tells_cryptic_twins_apart_where_the_pixels_cannot(seed):
    """Vision cannot tell cryptic twins apart (the same drawing): at best half and half. The
    prior, fitted on the training places and dates, decides between them. Five data and fit
    seeds measured 0.75-0.82 on the twins against 0.5: the margin asserted is 0.15."""
    world, k = _twin_world(seed)
    prior = PriorFit(seed=seed).fit(*world["train"], k)
    places, labels = world["test"]
    labels = np.array(labels)
    twins = labels < 4
    vision = np.full((len(labels), k), 1e-3)
    for i, y in enumerate(labels):  # sure of the pair, blind within it
        pair = [y - y % 2, y - y % 2 + 1] if y < 4 else [y]
        vision[i, pair] = 1.0
    log_vision = np.log(vision / vision.sum(1, keepdims=True))
    fused = fused_log_probabilities(log_vision, prior, places, 1.0)
    vision_acc = (log_vision.argmax(1) == labels)[twins].mean()
    fused_acc = (fused.argmax(1) == labels)[twins].mean()
    assert vision_acc == pytest.approx(0.5, abs=0.05)
    assert fused_acc > vision_acc + 0.15, (vision_acc, fused_acc)
    # a photo with no place and no date is left exactly as vision said
    alone = fused_log_probabilities(log_vision[:1], prior, [Place()], 1.0)
    assert np.allclose(alone, log_vision[:1], atol=1e-6)
    assert fused_log_probabilities(log_vision, prior, places, 0.0) is log_vision


def test_the_prior_travels_as_plain_tensors_and_a_tampered_one_is_refused(tmp_path):
    world, k = _twin_world(0, observations=20)
    prior = PriorFit(steps=50).fit(*world["train"], k)
    torch.save({"prior": prior.to_dict()}, tmp_path / "p.pt")
    found = torch.load(tmp_path / "p.pt", weights_only=True)["prior"]
    back = PlacePrior.from_dict(found, k, "prior")
    places = world["test"][0][:5]
    assert np.allclose(back.log_probabilities(places), prior.log_probabilities(places))
    with pytest.raises(ValueError, match="do not fit 7 classes"):
        PlacePrior.from_dict(found, 7, "prior")
    found["state"]["0.weight"][0, 0] = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        PlacePrior.from_dict(found, k, "prior")
    with pytest.raises(ValueError, match="version-1"):
        PlacePrior.from_dict({"hidden": 4}, k, "prior")


def test_no_prior_without_places_and_bad_settings_name_their_key():
    assert PriorFit().fit([Place()] * 50, [0, 1] * 25, 2) is None
    assert PriorFit(enabled=False).fit([Place(1.0, 2.0, 3)] * 50, [0, 1] * 25, 2) is None
    with pytest.raises(ValueError, match=r"hide_place=1\.0: must be in \[0, 1\)"):
        PriorFit(hide_place=1.0)


def _out_of_memory(*args) -> None:
    raise RuntimeError("CUDA out of memory")


@pytest.mark.parametrize("fails", [None, "diverges", "raises"])
def test_a_prior_fit_that_fails_leaves_the_best_checkpoint_loadable_without_one(
    tmp_path, monkeypatch, caplog, fails
):
    """The prior is fitted after training, into the best checkpoint: a fit that diverges (a
    huge but finite ``prior.lr``) or raises stores no prior, with a warning; the trained model
    still loads (predict would refuse a NaN prior and the model would be lost)."""
    best = small_checkpoint(tmp_path / "best.ckpt")
    if fails == "raises":
        monkeypatch.setattr(PriorFit, "_steps", _out_of_memory)
    settings = PriorFit(steps=5, min_photos=1, lr=1e30 if fails == "diverges" else 0.01)
    located = [{"latitude": float(i), "longitude": float(2 * i)} for i in range(30)]
    datamodule = SimpleNamespace(
        records={
            "train": [Record(str(i), str(i), "", "x", "x.jpg", **w) for i, w in enumerate(located)]
        },
        datasets={"train": SimpleNamespace(labels=[i % 3 for i in range(30)])},
        num_classes=3,
    )
    trainer = SimpleNamespace(is_global_zero=True, strategy=SimpleNamespace(barrier=lambda _: None))
    with caplog.at_level(logging.WARNING):
        fit_prior(trainer, datamodule, str(best), settings)
    assert ("prior" in torch.load(best, weights_only=True)) is (fails is None)
    assert (load_classifier(best).prior is None) is (fails is not None)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("no place prior" in m for m in warned) is (fails is not None), warned


# ---------------------------------------------------------------------- out of set


def _logits(n: int, k: int, margin: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1, (n, k))
    z[np.arange(n), rng.integers(k, size=n)] += margin
    return z.astype(np.float32)


def test_the_open_set_rule_accepts_its_share_and_flags_flat_answers():
    known, unknown = _logits(2000, 5, 6.0, 0), _logits(500, 5, 0.0, 1)
    rule = OpenSetRule.fit(known, 1.0, "max_softmax", accept=0.9)
    assert np.mean(~rule.flags(known, 1.0)) == pytest.approx(0.9, abs=0.01)
    assert np.mean(rule.flags(unknown, 1.0)) > 0.8  # flat logits: not one of mine
    report = open_set_report(known, unknown, 1.0, rule)
    assert report["false_accept_rate"] == pytest.approx(np.mean(~rule.flags(unknown, 1.0)))
    assert set(report["auroc"]) == {"max_softmax", "energy"}
    assert all(v > 0.9 for v in report["auroc"].values())
    assert OpenSetRule.from_dict(rule.to_dict(), "open_set") == rule
    with pytest.raises(ValueError, match="not an out-of-set rule"):
        OpenSetRule.from_dict({**rule.to_dict(), "threshold": math.inf}, "open_set")
    # energy grows with the logits' scale; the softmax maximum is bounded by 1
    assert (
        open_set_score(known * 2, 1.0, "energy").mean()
        > open_set_score(known, 1.0, "energy").mean()
    )
    assert open_set_score(known, 1.0, "max_softmax").max() <= 1.0


def test_auroc_is_the_share_of_pairs_ordered_right():
    assert auroc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert auroc(np.array([1.0, 4.0]), np.array([2.0, 3.0])) == pytest.approx(0.5)
    assert open_set_report(np.zeros((3, 2)), None, 1.0, None) is None


# ---------------------------------------------------------------------- risk-coverage


def test_the_fallback_answers_more_photos_right_at_the_same_threshold():
    names = ["A a", "A b", "C c"]
    lineages = {"A a": {"genus": "A", "family": "F"}, "A b": {"genus": "A", "family": "F"},
                "C c": {"genus": "C", "family": "F"}}  # fmt: skip
    coarse = RankAnswer(names, lineages, threshold=0.6)
    probs = np.array(
        [
            [0.9, 0.05, 0.05],  # sure, right
            [0.45, 0.45, 0.1],  # twins: the genus is sure (0.9), species unsure
            [0.25, 0.25, 0.5],  # only the family is sure
            [0.05, 0.05, 0.9],  # sure, wrong (truth A a)
        ]
    )
    labels = [0, 1, 2, 0]
    curves = risk_coverage(probs, labels, coarse, thresholds=[0.0, 0.6])
    species, fallback = at_threshold(curves, 0.6)
    assert (species["coverage"], species["accuracy"]) == (0.5, 0.5)
    assert (fallback["coverage"], fallback["accuracy"]) == (1.0, 0.75)
    assert curves["species"][0] == {"threshold": 0.0, "coverage": 1.0, "accuracy": 0.5}
    assert coarse(probs[1]) == ("genus", "A", pytest.approx(0.9))


def test_a_photo_takes_its_place_from_the_csv_then_the_manifest_then_its_exif(tmp_path):
    gps = _jpeg_with_gps((10.0, 30.0, 0.0), "N", (20.0, 0.0, 0.0), "W", "2024:01:10 12:00:00")
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        (tmp_path / name).write_bytes(gps)
    located = {"latitude": 1.0, "longitude": 2.0, "observed_on": "2024-01-05"}
    records = [
        Record("a", "a", "", "", "a.jpg", **located),  # the CSV wins over the manifest
        Record("b", "b", "", "", "b.jpg", **located),  # the manifest wins over EXIF
        Record("c", "c", "", "", "c.jpg"),  # EXIF only
        Record("d", "d", "", "", "d.jpg"),
    ]
    given = [Place(5.0, 6.0, None), None, None, None]  # from the CSV: csv_places
    places, sources = photo_places(tmp_path, records, given, exif=True)
    assert sources == ["csv", "manifest", "exif", "exif"]
    assert places[0] == Place(5.0, 6.0, None) and places[1] == Place(1.0, 2.0, 5)
    assert places[2] == Place(10.5, -20.0, 10)
    places, sources = photo_places(tmp_path, records, None, exif=False)
    assert sources == ["manifest", "manifest", None, None] and places[3] == Place()


def test_the_prior_term_moves_a_streamed_answer_and_flags_follow_the_vision_logits():
    from inat_lightning.analysis.infer import Batch

    logits = np.array([[2.0, 2.0, -5.0], [0.1, 0.0, 0.0]], dtype=np.float32)
    batch = Batch(index=np.array([0, 1]), logits=logits, labels=np.array([-1, -1]))
    names = ["A a", "A b", "C c"]
    rule = OpenSetRule("max_softmax", 0.45, 0.95)
    toward_b = np.log(np.array([[0.2, 0.8, 1.0], [1.0, 1.0, 1.0]]))
    got = answer([batch], ["o1", "o2"], names, 1.0, 2, None, lambda idx: toward_b[idx], rule)
    assert got.photos[0][0][0] == "A b"  # a tie in the pixels, decided by where and when
    assert got.out_of_set == [False, True]  # [0]: max softmax ~0.5 (vision alone); [1]: ~0.35
    plain = answer([batch], ["o1", "o2"], names, 1.0, 2)
    assert plain.out_of_set == [None, None]
