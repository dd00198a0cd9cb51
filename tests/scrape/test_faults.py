"""A scrape against a hostile network completes: every fault is a per-photo outcome.

About a quarter of the photo URLs and a few API requests are faulty, one fault of each kind. The
scrape ends normally; every listed photo is in the manifest (decodable, right class) or in
``failures.csv`` with its reason and kind; a re-run fetches exactly the transient failures; the
rate limit holds, retries included; no partial file is left."""

from __future__ import annotations

import csv

from inat_lightning.data.manifest import read_manifest
from inat_lightning.scrape.scraper import scrape
from tests.fakeinat.server import FakeINat
from tests.helpers.scrape import CC, scrape_cfg
from tests.scrape.test_scrape import assert_rate_held, assert_tree_is_exactly

# then it works: transport and status faults, and bodies that are not the photo (a maintenance
# page, a label that is not an image's, a cut image) which pass on the next try
RECOVER = ["drop", "reset", "502", "503", "504", "429", "429date", "timeout", "html", "ctype"]
RECOVER += ["truncate"]
PERMANENT = ["big", "bomb", "foreign", "loop", "404", "truncate*"]  # *: on every try
BAD_URLS = ["file:///etc/passwd", "http://[::1", "ftp://127.0.0.1/x.jpg"]


def test_a_scrape_on_a_hostile_network_completes_and_a_rerun_gets_the_transient(tmp_path):
    ids = sorted(FakeINat(num_taxa=2, observations_per_taxon=30).expected_photos(CC))
    faults = {pid: [f] for pid, f in zip(ids, RECOVER + PERMANENT)}
    faults = {p: ["truncate"] * 4 if f == ["truncate*"] else f for p, f in faults.items()}
    transient_pid = ids[len(faults)]
    faults[transient_pid] = ["503"] * 4  # outlasts this run's 4 attempts
    bad = dict(zip(ids[len(faults) :], BAD_URLS))
    api_faults = {2: "drop", 3: "503", 5: "reset", 6: "html", 8: "429date", 9: "timeout"}
    settings = [
        "scrape.backend.per_page=6",
        "scrape.retries=3",
        "scrape.backoff=0.05",
        "scrape.media_rate=20",
        "scrape.api_rate=10",
        "scrape.max_bytes=1000000",
        "scrape.max_pixels=1000000",
    ]
    with FakeINat(
        num_taxa=2,
        observations_per_taxon=30,
        faults=faults,
        api_faults=api_faults,
        bad_urls=bad,
        retry_after=0.3,
        timeout_sleep=2.5,
    ) as fake:
        assert len(faults) + len(bad) >= len(ids) // 4  # a quarter of the URLs at least
        summary = scrape(scrape_cfg(tmp_path, fake, *settings))
        expected = fake.expected_photos(CC)
        failed_ids = {ids[i] for i in range(len(RECOVER), len(RECOVER) + len(PERMANENT))}
        failed_ids |= {transient_pid, *bad}
        kept = {p: t for p, t in expected.items() if p not in failed_ids}
        assert_tree_is_exactly(tmp_path / "inat", fake, kept)
        rows = {
            r["photo_id"]: r for r in csv.DictReader((tmp_path / "inat" / "failures.csv").open())
        }
        assert {int(p) for p in rows} == failed_ids and summary.failed == len(failed_ids)
        kinds = {int(p): r["kind"] for p, r in rows.items()}
        assert [p for p, k in kinds.items() if k == "transient"] == [transient_pid]
        reasons = {plan[0]: rows[str(p)]["reason"] for p, plan in faults.items() if str(p) in rows}
        assert "does not decode" in reasons["truncate"] and "every try" in reasons["truncate"]
        assert "max_bytes" in reasons["big"] and "max_pixels" in reasons["bomb"]
        assert "foreign.invalid" in reasons["foreign"] and "redirects" in reasons["loop"]
        assert "HTTP 404" in reasons["404"]
        assert all(rows[str(p)]["kind"] == "permanent" for p in bad)
        # a foreign host is never contacted; the rate limits hold, retries included
        assert_rate_held(fake.request_times("photo"), 20)
        assert_rate_held(fake.request_times("api"), 10)

        before = len(fake.request_times("photo"))
        again = scrape(scrape_cfg(tmp_path, fake, *settings))
        asked = [p for _, k, p in fake.requests if k == "photo"][before:]
        assert len(asked) == 1 and f"/photos/{transient_pid}/" in asked[0]
        assert again.downloaded == 1 and again.known_failures == len(failed_ids) - 1
        kept[transient_pid] = expected[transient_pid]
        assert_tree_is_exactly(tmp_path / "inat", fake, kept)
        assert len(read_manifest(tmp_path / "inat" / "manifest.csv")) == len(kept)


def test_bodies_that_are_not_the_photo_but_clear_after_a_try_or_two_lose_no_photo(tmp_path):
    """Maintenance pages, mislabelled bodies and cut images that pass after one or two tries
    (a CDN or proxy hiccup): every photo arrives, nothing is failed for good."""
    ids = sorted(FakeINat(num_taxa=2, observations_per_taxon=20).expected_photos(CC))
    plans = [["html"], ["html", "html"], ["truncate"], ["truncate", "truncate"], ["ctype"]]
    plans += [["html", "truncate"], ["drop", "html"]]
    faults = {pid: plans[i % len(plans)] for i, pid in enumerate(ids)}  # every photo
    with FakeINat(num_taxa=2, observations_per_taxon=20, faults=faults) as fake:
        summary = scrape(scrape_cfg(tmp_path, fake, "scrape.retries=3", "scrape.backoff=0.02"))
        assert_tree_is_exactly(tmp_path / "inat", fake, fake.expected_photos(CC))
    assert summary.failed == 0 and summary.downloaded == len(ids)
    failures = tmp_path / "inat" / "failures.csv"
    assert not failures.exists() or len(failures.read_text().splitlines()) == 1  # header only
