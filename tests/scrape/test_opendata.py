"""The open-data backend against a miniature export in the real layout (tests/fakeinat/opendata),
read from a folder and streamed from the fake server, and the dataset card it leaves."""

from __future__ import annotations

import csv
import gzip
import io
from collections import Counter
from pathlib import Path

import pytest

from inat_lightning.config import ConfigError
from inat_lightning.data.card import CARD_NAME, CREDITS_NAME, licence_warnings
from inat_lightning.data.manifest import read_manifest
from inat_lightning.data.taxonomy import read_taxa
from inat_lightning.scrape.opendata import license_code, read_table, select_photos
from inat_lightning.scrape.scraper import scrape
from tests.fakeinat.opendata import INACTIVE_CHILD, SUBSPECIES, make_dump
from tests.fakeinat.server import FakeINat
from tests.helpers.scrape import CC, scrape_cfg


def opendata_cfg(tmp_path: Path, fake: FakeINat, source: str, *overrides: str):
    return scrape_cfg(
        tmp_path,
        fake,
        "scrape/backend=opendata",
        f"scrape.backend.source={source}",
        f"scrape.backend.photo_base={fake.base_url}",
        "scrape.backend.media_rate=40",
        *overrides,
    )


def write_dump(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def test_scrape_from_a_local_export_selects_descendants_and_writes_the_card(tmp_path):
    with FakeINat(num_taxa=3, observations_per_taxon=12) as fake:
        dump = make_dump(fake)
        source = write_dump(tmp_path / "export", dump.files)
        summary = scrape(opendata_cfg(tmp_path, fake, str(source)))
        kinds = Counter(k for _, k, _ in fake.requests)
    expected = dump.expected(fake, CC)
    root = tmp_path / "inat"
    rows = read_manifest(root / "manifest.csv")
    got = {int(r.photo_id): r for r in rows}
    assert set(got) == set(expected) and summary.failed == 0
    assert kinds["api"] == 0  # nothing asked of the API
    for pid, r in got.items():
        assert (
            r.taxon_name == fake.taxa[expected[pid]]["name"]
        )  # a subspecies counts for its species
        owner = fake.photo_owner[pid]
        assert r.observation_id.endswith(f"{owner.id:012d}")
        assert r.url == f"{fake.base_url}/photos/{pid}/medium.jpg"
        assert r.license == fake.photo_license(pid) and r.quality_grade == "research"
        n = owner.id % 13
        assert (r.observer_id, r.observer) == (str(700 + n), f"observer{n}")
        shown = 'Seán O"Brien' if n == 0 else f"Person {n}"  # the quote kept as written
        assert shown in r.attribution
        # the export's place (some rows have none) and positional accuracy
        placed = owner.id % 6 != 2
        assert (r.latitude, r.longitude) == (fake.place(owner) if placed else (None, None))
        assert r.pos_accuracy == (10.0 if owner.id % 4 else None) and r.captive is None
    moved = [o for o in fake.observations if dump.taxon_of_obs[o.id] == SUBSPECIES]
    assert moved and all(p in got for o in moved for p in o.photo_ids if p in expected)
    inactive = [o for o in fake.observations if dump.taxon_of_obs[o.id] == INACTIVE_CHILD]
    assert inactive and not any(p in got for o in inactive for p in o.photo_ids)
    # lineage from the export's own taxa table
    taxa = read_taxa(root / "taxa.csv")
    for t in fake.taxa:
        assert taxa[str(t["id"])].lineage == {a["rank"]: a["name"] for a in fake.ancestors[t["id"]]}

    # the card and credits agree with the manifest
    credits = list(csv.DictReader((root / CREDITS_NAME).open(encoding="utf-8")))
    assert [c["photo_id"] for c in credits] == [r.photo_id for r in rows]
    assert all(c["attribution"] == r.attribution for c, r in zip(credits, rows))
    card = (root / CARD_NAME).read_text(encoding="utf-8")
    for name, n in Counter(r.taxon_name for r in rows).items():
        assert f"| {name} | {n} | {n} |" in card  # all research grade
    for code, n in Counter(r.license for r in rows).items():
        assert f"| {code} | {n} |" in card
    assert f"{len({r.observer for r in rows})} observers" in card
    assert (
        "non-commercial use" in card
        and "all rights reserved" not in card.split("## Licences")[1].split("|")[0]
    )
    dates = sorted(r.observed_on for r in rows)
    assert f"From {dates[0]} to {dates[-1]}." in card
    assert "OpenDataLister" in card


def test_a_streamed_export_is_retried_then_reused_on_resume(tmp_path):
    with FakeINat(num_taxa=2, observations_per_taxon=8) as fake:
        dump = make_dump(fake)
        fake.opendata = dump.files
        fake.opendata_faults = {1: "503", 3: "reset"}
        cfg = opendata_cfg(tmp_path, fake, f"{fake.base_url}/opendata", "scrape.licenses=null")
        scrape(cfg)
        fetched = [p for _, k, p in fake.requests if k == "opendata"]
        assert sum("photos.csv.gz" in p for p in fetched) == 1
        again = scrape(cfg)  # a resumed scrape does not read the big tables again
        refetched = [p for _, k, p in fake.requests if k == "opendata"][len(fetched) :]
    every = dump.expected(fake, {*CC, None})  # licenses=null: all rights reserved too
    rows = read_manifest(tmp_path / "inat" / "manifest.csv")
    assert {int(r.photo_id) for r in rows} == set(every)
    assert again.downloaded == 0 and again.skipped == len(every)
    assert not any("photos.csv.gz" in p or "observations" in p for p in refetched)
    card = (tmp_path / "inat" / CARD_NAME).read_text(encoding="utf-8")
    arr = sum(1 for r in rows if not r.license)
    assert arr and f"{arr} photos are all rights reserved" in card


def test_a_host_outside_the_allow_list_is_refused(tmp_path):
    with FakeINat(num_taxa=2, observations_per_taxon=4) as fake:
        cfg = opendata_cfg(
            tmp_path, fake, "https://elsewhere.example/opendata", "scrape.allowed_hosts=[127.0.0.1]"
        )
        summary = scrape(cfg)
    assert summary.failed == 2 and summary.downloaded == 0
    assert "not in the allowed hosts" in (tmp_path / "inat" / "failures.csv").read_text()


def test_a_missing_folder_is_a_config_error_naming_the_key(tmp_path):
    with (
        FakeINat(num_taxa=2, observations_per_taxon=2) as fake,
        pytest.raises(ConfigError, match="scrape.backend.source"),
    ):
        scrape(opendata_cfg(tmp_path, fake, str(tmp_path / "nowhere")))


def test_tables_are_tab_separated_without_quoting():
    data = gzip.compress(
        b"photo_uuid\tphoto_id\tobservation_uuid\tobserver_id\textension\tlicense\n"
        b'u1\t11\to"1\t5\tjpeg\tCC-BY\n'
        b"u2\t12\to2\t5\tpng\tCC0\n"
        b"u3\tx/../y\to2\t5\tpng\tCC0\n"
        b"torn\t13\n"
    )
    with read_table(gzip.GzipFile(fileobj=io.BytesIO(data)), "photos") as (columns, lines):
        rows = list(select_photos(columns, lines, {b'o"1', b"o2"}))
    assert [(r["photo_id"], r["observation_uuid"], r["extension"]) for r in rows] == [
        ("11", 'o"1', "jpeg"),
        ("12", "o2", "png"),
    ]
    empty = io.BytesIO(b"a\tb\n")
    with pytest.raises(ValueError, match="columns"), read_table(empty, "photos"):
        pass


def test_licence_codes_and_warnings():
    assert license_code("CC-BY-NC") == "cc-by-nc" and license_code("") == ""
    warnings = " ".join(licence_warnings({"cc-by-nc-nd": 2, "cc0": 1, "": 3, "cc-by-sa": 1}))
    for piece in (
        "non-commercial",
        "do not redistribute modified",
        "ShareAlike",
        "3 photos are all rights reserved",
        "3 photos need attribution",
    ):
        assert piece in warnings, piece
    assert licence_warnings({"cc0": 5}) == []


def test_a_rerun_after_taxa_filled_up_reads_no_table_of_the_export(tmp_path):
    """With a cap, taxa fill up; re-running the same command (as the README says) resolves,
    plans and lists from the spool: not one table of the export is read again."""
    with FakeINat(num_taxa=2, observations_per_taxon=8) as fake:
        dump = make_dump(fake)
        fake.opendata = dump.files
        cfg = opendata_cfg(
            tmp_path,
            fake,
            f"{fake.base_url}/opendata",
            "scrape.licenses=null",
            "scrape.max_per_taxon=3",
        )
        first = scrape(cfg)
        fetched = len([p for _, k, p in fake.requests if k == "opendata"])
        assert fetched >= 4 and first.downloaded == 6  # every table once; both taxa full
        again = scrape(cfg)
        refetched = [p for _, k, p in fake.requests if k == "opendata"][fetched:]
    assert refetched == [] and again.downloaded == 0
    entries = read_taxa(tmp_path / "inat" / "taxa.csv")
    assert len(entries) == 2  # the lineages came from the spool on the re-run too
