"""A manifest is checked, not trusted: one file under several spellings is one photo in one
split, a manifest that mostly names missing files is an error before any work, and a bad cell,
encoding or setting is one line naming the file, row and column, or the key."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from inat_lightning.config import ConfigError
from inat_lightning.data.datamodule import ImageFolderDataModule
from inat_lightning.data.geo import read_places
from inat_lightning.data.manifest import (
    Record,
    date_or_empty,
    load_records,
    read_manifest,
    write_manifest,
)
from inat_lightning.evaluation import evaluate
from tests.helpers.cli import compose_config, run_cli
from tests.helpers.data import make_image_folder
from tests.house.test_untrusted_files import small_checkpoint


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def aliased_dataset(root: Path, per_class: int = 30) -> tuple[list[Record], int]:
    """Two classes of photos, and for each photo a second row under another photo id and
    observation (so a split would separate them) naming the same file another way: ``./`` in
    its path, a symlink, a hard link, or a copy with the same sha256. Returns the rows and the
    number of distinct photos."""
    make_image_folder(root, {"a": per_class, "b": per_class}, 24)
    rows: list[Record] = []
    for c in "ab":
        for i in range(per_class):
            rel = f"{c}/{i}.jpg"
            rows.append(Record(f"{c}{i}", f"obs-{c}{i}", c, c, rel, sha256=sha(root / rel)))
            alias = i % 4
            if alias == 0:
                other = f"{c}/./{i}.jpg"
            elif alias == 1:
                other = f"{c}/link{i}.jpg"
                os.symlink(f"{i}.jpg", root / other)
            elif alias == 2:
                other = f"{c}/hard{i}.jpg"
                os.link(root / rel, root / other)
            else:
                other = f"{c}/copy{i}.jpg"
                shutil.copy(root / rel, root / other)
            extra_sha = sha(root / rel) if alias == 3 else ""
            rows.append(Record(f"{c}{i}x", f"obs-{c}{i}x", c, c, other, sha256=extra_sha))
    write_manifest(root / "manifest.csv", rows)
    return rows, 2 * per_class


def test_one_file_under_other_spellings_is_one_photo_in_one_split(tmp_path):
    root = tmp_path / "photos"
    rows, photos = aliased_dataset(root)
    assert len(load_records(root)) == photos  # counted once
    dm = ImageFolderDataModule(root, image_size=16, num_workers=0, batch_size=8)
    dm.setup()
    where: dict[str, set[str]] = {}
    for split, records in dm.records.items():
        for r in records:
            where.setdefault(sha(root / r.path), set()).add(split)
    assert len(where) == photos and all(len(s) == 1 for s in where.values())


def manifest_with_missing(root: Path, n: int, missing: int) -> None:
    make_image_folder(root, {"a": n // 2, "b": n - n // 2}, 16)
    rows = [
        Record(f"p{i}", f"o{i}", c, c, f"{c}/{j}.jpg")
        for i, (c, j) in enumerate(
            [("a", j) for j in range(n // 2)] + [("b", j) for j in range(n - n // 2)]
        )
    ]
    rows += [Record(f"m{i}", f"om{i}", "a", "a", f"a/gone{i}.jpg") for i in range(missing)]
    write_manifest(root / "manifest.csv", rows)


def test_a_manifest_that_mostly_names_missing_files_is_an_error_before_any_work(tmp_path):
    manifest_with_missing(tmp_path / "bad", 40, 960)
    with pytest.raises(
        ValueError, match=r"960 of 1000 rows \(96\.0%\) name missing files.*a/gone0\.jpg"
    ):
        load_records(tmp_path / "bad")
    cfg = compose_config("train", tmp_path, "data=imagefolder", f"data.root={tmp_path / 'bad'}")
    from inat_lightning.training import train

    with pytest.raises(ConfigError, match=r"^data: .*960 of 1000 rows"):
        train(cfg)


def test_a_few_missing_files_are_one_warning_line_and_left_out(tmp_path, caplog):
    manifest_with_missing(tmp_path / "ok", 100, 2)
    with caplog.at_level("WARNING"):
        records = load_records(tmp_path / "ok")
    assert len(records) == 100
    lines = [r for r in caplog.records if "missing" in r.getMessage()]
    assert len(lines) == 1 and "2 of 102 rows" in lines[0].getMessage()


def test_a_manifest_with_a_byte_order_mark_is_read(tmp_path):
    make_image_folder(tmp_path, {"a": 2}, 16)
    write_manifest(tmp_path / "manifest.csv", [Record("1", "1", "a", "a", "a/0.jpg")])
    text = (tmp_path / "manifest.csv").read_text(encoding="utf-8")
    (tmp_path / "manifest.csv").write_text(text, encoding="utf-8-sig")  # as Excel saves it
    assert [r.photo_id for r in read_manifest(tmp_path / "manifest.csv")] == ["1"]


def test_a_bad_cell_names_the_file_row_and_column(tmp_path):
    write_manifest(tmp_path / "manifest.csv", [Record("1", "1", "a", "a", "a/0.jpg", width=5)])
    text = (tmp_path / "manifest.csv").read_text().replace(",5,", ",abc,")
    (tmp_path / "manifest.csv").write_text(text)
    with pytest.raises(
        ValueError, match=r"manifest\.csv: row 2, column width: 'abc' is not an integer"
    ):
        read_manifest(tmp_path / "manifest.csv")


def in_days(days: int) -> str:
    return str(dt.date.today() + dt.timedelta(days=days))


BAD_DATES = ["2024-13-45", "yesterday", "2024-02-30", "2024-06-01 garbage", "2999-01-01"]


def date_in(kind: str, folder: Path, date: str) -> Callable[[], object]:
    """A manifest, or a places CSV, whose one row has ``observed_on=date``, and its reader."""
    if kind == "manifest":
        write_manifest(
            folder / "manifest.csv", [Record("1", "1", "a", "a", "a/0.jpg", observed_on=date)]
        )
        return lambda: read_manifest(folder / "manifest.csv")
    (folder / "places.csv").write_text(f"photo_id,observed_on\n1,{date}\n")
    return lambda: read_places(folder / "places.csv")


@pytest.mark.parametrize("date", [*BAD_DATES, in_days(2)])
@pytest.mark.parametrize("kind", ["manifest", "places"])
def test_a_bad_or_future_date_is_refused_alike_by_the_manifest_and_a_places_csv(
    tmp_path, kind, date
):
    """One date rule: a date that is malformed, impossible or after tomorrow (a day of slack for
    time zones) names the file, row and column, wherever it is read."""
    with pytest.raises(
        ValueError, match=rf"row 2, column observed_on: '{date}' is (not a date|in the f)"
    ):
        date_in(kind, tmp_path, date)()


@pytest.mark.parametrize("kind", ["manifest", "places"])
def test_a_date_up_to_tomorrow_is_read_and_a_scraped_bad_one_is_left_empty(tmp_path, kind):
    date_in(kind, tmp_path, in_days(1))()  # today somewhere east
    assert [date_or_empty(d) for d in (*BAD_DATES, "2024-06-01")] == [""] * 5 + ["2024-06-01"]


def test_a_manifest_that_is_not_utf8_names_the_file(tmp_path):
    (tmp_path / "manifest.csv").write_bytes(
        b"photo_id,observation_id,taxon_name,path\n1,1,\xff\xfe,a/0.jpg\n"
    )
    with pytest.raises(ValueError, match=r"manifest\.csv: not UTF-8 text"):
        read_manifest(tmp_path / "manifest.csv")


@pytest.mark.slow
@pytest.mark.parametrize(
    "override, key",
    [
        ("data.batch_size=abc", "data.batch_size='abc': must be an integer"),
        ("seed=abc", "seed='abc': must be an integer"),
        ("data.root={file}", "data.root="),
    ],
)
def test_a_bad_setting_is_one_line_naming_its_key(tmp_path, override, key):
    (tmp_path / "a_file").write_text("not a folder")
    res = run_cli(
        "train.py", override.format(file=tmp_path / "a_file"), tmp_path=tmp_path, timeout=120
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert f"config error: {key}" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("saved", ["data: [unclosed", "model: {}", "data: 5", "- a list"])
def test_a_broken_run_folder_config_is_one_line_naming_the_file(tmp_path, saved):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    ckpt = small_checkpoint(run / "checkpoints" / "best.ckpt")
    (run / ".hydra" / "config.yaml").write_text(saved)
    cfg = compose_config("evaluate", tmp_path, f"ckpt_path={ckpt}")
    with pytest.raises(ConfigError, match=r"^ckpt_path: the run's .*config\.yaml (is not|has no)"):
        evaluate(cfg)


def test_a_folder_of_mostly_unreadable_images_is_an_error_before_any_work(tmp_path):
    make_image_folder(tmp_path / "photos", {"a": 30, "b": 30}, 16)
    for i in range(20):  # a third of the files are not images (an HTML error page saved as .jpg)
        (tmp_path / "photos" / "a" / f"{i}.jpg").write_bytes(b"<html>503</html>")
    dm = ImageFolderDataModule(tmp_path / "photos", image_size=16, num_workers=0)
    with pytest.raises(
        ValueError, match=r"20 of 60 images checked .* not readable images.*a/0\.jpg"
    ):
        dm.setup()
    # a few: left to the loader, which skips and counts them
    make_image_folder(tmp_path / "few", {"a": 30, "b": 30}, 16)
    (tmp_path / "few" / "a" / "0.jpg").write_bytes(b"<html>503</html>")
    ok = ImageFolderDataModule(tmp_path / "few", image_size=16, num_workers=0)
    ok.setup()
    assert sum(len(d) for d in ok.datasets.values()) == 60
