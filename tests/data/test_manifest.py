from pathlib import Path

from inat_lightning.data.manifest import (
    COLUMNS,
    MANIFEST_NAME,
    Record,
    load_records,
    read_manifest,
    safe_folder_name,
    scan_image_folder,
    write_manifest,
)
from tests.helpers.data import make_image_folder


def test_round_trip_keeps_every_field(tmp_path: Path):
    recs = [
        Record(
            "1",
            "10",
            "47219",
            "Apis mellifera",
            "Apis mellifera/1.jpg",
            "cc-by",
            "(c) x",
            "https://e/1.jpg",
            "ab" * 32,
            500,
            375,
            "research",
            1.5,
            2.0,
            30.0,
            40.5,
        ),
        Record("2", "10", "47219", "Apis mellifera", "Apis mellifera/2.jpg"),
    ]
    write_manifest(tmp_path / "m.csv", recs)
    assert read_manifest(tmp_path / "m.csv") == recs
    assert recs[0].cue_box == (1.5, 2.0, 30.0, 40.5) and recs[1].cue_box is None
    header = (tmp_path / "m.csv").read_text().splitlines()[0].split(",")
    assert tuple(header) == COLUMNS
    assert not list(tmp_path.glob("*.part"))


def test_manifest_missing_required_column_is_refused(tmp_path: Path):
    (tmp_path / "m.csv").write_text("photo_id,path\n1,a/1.jpg\n")
    try:
        read_manifest(tmp_path / "m.csv")
    except ValueError as e:
        assert "observation_id" in str(e) and "taxon_name" in str(e)
    else:
        raise AssertionError("accepted a manifest without observation_id")


def test_safe_folder_name():
    assert safe_folder_name("Danaus plexippus") == "Danaus plexippus"
    assert safe_folder_name("../../etc/passwd") == "etc_passwd"
    assert "/" not in safe_folder_name("a/b\\c") and ".." not in safe_folder_name("..")
    assert safe_folder_name("") == "unnamed"


def test_scan_plain_folder_each_image_is_its_own_observation(tmp_path: Path):
    make_image_folder(tmp_path, {"b": 2, "a": 3})
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()
    recs = scan_image_folder(tmp_path)
    assert [r.taxon_name for r in recs] == ["a"] * 3 + ["b"] * 2
    assert len({r.observation_id for r in recs}) == 5
    assert load_records(tmp_path) == recs
    write_manifest(tmp_path / MANIFEST_NAME, recs[:2])
    assert load_records(tmp_path) == recs[:2]  # the manifest wins when present
