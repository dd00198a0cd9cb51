"""The Selenium backend: real headless Chromium scrolling the fake infinite grid."""

from __future__ import annotations

import os
import shutil
from collections import Counter

import pytest

from inat_lightning.data.manifest import read_manifest
from inat_lightning.scrape.browser import observation_id_from_href, tile_photo_url
from inat_lightning.scrape.scraper import scrape
from tests.fakeinat.server import GRID_PAGE, TRIGGERS, FakeINat
from tests.helpers.scrape import scrape_cfg

HAVE_BROWSER = bool(shutil.which("chromium") and shutil.which("chromedriver"))


def need_browser() -> None:
    """Skip without Chromium on a user's machine; in CI (``CI`` set) a missing browser fails."""
    if not HAVE_BROWSER:
        if os.environ.get("CI"):
            pytest.fail(
                "CI is set but chromium/chromedriver are missing: `make browser` installs them"
            )
        pytest.skip("chromium and chromedriver not installed (make browser)")


def test_tile_parsing():
    assert (
        tile_photo_url('url("https://s/photos/12/medium.jpg")') == "https://s/photos/12/medium.jpg"
    )
    assert tile_photo_url("url(https://s/photos/12/medium.jpg)") == "https://s/photos/12/medium.jpg"
    assert tile_photo_url("https://s/photos/12/small.jpg") == "https://s/photos/12/small.jpg"
    assert tile_photo_url("") is None
    assert (
        observation_id_from_href("https://www.inaturalist.org/observations/57754375") == "57754375"
    )
    assert observation_id_from_href("/taxa/3") is None


@pytest.mark.slow
def test_browser_scrolls_the_grid_and_downloads_every_tile(tmp_path):
    need_browser()
    with FakeINat(
        num_taxa=2, observations_per_taxon=2 * GRID_PAGE + 5, scroll_delay_ms=400
    ) as fake:
        cfg = scrape_cfg(
            tmp_path,
            fake,
            "scrape/backend=browser",
            f"scrape.backend.base_url={fake.base_url}",
            "scrape.size=small",
            "scrape.backend.load_timeout=10",
        )
        summary = scrape(cfg)
        # one photo per grid tile: each observation's first photo, whatever its license (the grid
        # of the fake, like a real grid URL without filters, lists them all)
        expected = {o.photo_ids[0]: o for o in fake.observations}
        rows = read_manifest(tmp_path / "inat" / "manifest.csv")
        assert sorted(int(r.photo_id) for r in rows) == sorted(expected)
        assert summary.failed == 0
        for r in rows:
            obs = expected[int(r.photo_id)]
            assert r.observation_id == str(obs.id)
            assert r.taxon_name == fake.taxa[obs.taxon_index]["name"]
            assert "/small.jpg" in r.url and r.width == 48  # medium tile URL mapped to small
            # what the tile does not say comes from the observation's API record
            photo = fake.photo_json(int(r.photo_id))
            assert (r.license, r.attribution) == (photo["license_code"] or "", photo["attribution"])
            assert r.observed_on == fake.observation_json(obs)["observed_on"]
            placed = obs.id % 6 not in (2, 4)
            assert (r.latitude, r.longitude) == (fake.place(obs) if placed else (None, None))
        details = [p for _, k, p in fake.requests if k == "api" and "?id=" in p]
        assert 0 < len(details) <= len(fake.taxa) * (len(expected) // 30 + 1)
        # it had to scroll: the page asked for more tiles (id_above > 0) for every taxon
        more = [
            p
            for _, k, p in fake.requests
            if k == "api" and "id_above=" in p and "id_above=0" not in p
        ]
        assert len(more) >= 2 * 2


@pytest.mark.slow
def test_browser_stops_at_the_cap(tmp_path):
    need_browser()
    with FakeINat(num_taxa=1, observations_per_taxon=3 * GRID_PAGE, scroll_delay_ms=100) as fake:
        cfg = scrape_cfg(
            tmp_path,
            fake,
            "scrape/backend=browser",
            f"scrape.backend.base_url={fake.base_url}",
            "scrape.max_per_taxon=15",
        )
        scrape(cfg)
        rows = read_manifest(tmp_path / "inat" / "manifest.csv")
        assert Counter(r.taxon_name for r in rows) == {fake.taxa[0]["name"]: 15}
        # it stopped scrolling once it had enough: the last page was never requested
        pages = [p for _, k, p in fake.requests if k == "api" and "taxon_id=" in p]
        assert len(pages) == 2


def browser_cfg(tmp_path, fake, trigger: str, *overrides: str):
    page = "{base}/observations?taxon_id={taxon_id}&trigger=" + trigger
    return scrape_cfg(
        tmp_path,
        fake,
        "scrape/backend=browser",
        f"scrape.backend.base_url={fake.base_url}",
        f"scrape.backend.page_url='{page}'",
        "scrape.backend.load_timeout=4",
        "scrape.backend.backoff=0.1",
        *overrides,
    )


@pytest.mark.slow
@pytest.mark.parametrize("trigger", TRIGGERS)
def test_the_whole_list_loads_whatever_triggers_the_next_tiles(tmp_path, trigger):
    need_browser()
    # 29 observations: 3 batches; a batch of 12 tiles fits the window (the page cannot scroll)
    with FakeINat(
        num_taxa=1, observations_per_taxon=2 * GRID_PAGE + 5, scroll_delay_ms=200
    ) as fake:
        summary = scrape(browser_cfg(tmp_path, fake, trigger))
        rows = read_manifest(tmp_path / "inat" / "manifest.csv")
        assert sorted(int(r.photo_id) for r in rows) == sorted(
            o.photo_ids[0] for o in fake.observations
        ), trigger
        assert summary.failed == 0


@pytest.mark.slow
def test_a_grid_page_that_fails_to_load_is_retried_then_reported(tmp_path):
    need_browser()
    with FakeINat(num_taxa=2, observations_per_taxon=5, page_faults={1: "503", 2: "html"}) as fake:
        faults = {4 + i: "503" for i in range(4)}  # the second taxon's page never loads
        fake.page_faults.update(faults)
        summary = scrape(browser_cfg(tmp_path, fake, "window", "scrape.backend.load_timeout=1.5"))
        rows = read_manifest(tmp_path / "inat" / "manifest.csv")
        first = fake.taxa[0]["name"]
        assert {r.taxon_name for r in rows} == {first}  # loaded on its third try
        assert len(rows) == 5 and summary.failed == 1
        failures = (tmp_path / "inat" / "failures.csv").read_text()
        assert fake.taxa[1]["name"] in failures and "no tiles and no end of list" in failures
        assert ",transient" in failures  # a re-run tries the listing again
