"""Parsing checked against genuine iNaturalist API v1 responses in ../shared/fixtures/inat/
(not part of the project: skipped in a user's clone, required in CI)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from inat_lightning.scrape.backend import Taxon
from inat_lightning.scrape.download import BadBody, decode_check
from inat_lightning.scrape.http import HttpClient, HttpError
from inat_lightning.scrape.inat_api import INatAPI, parse_observation, pick_taxon
from tests.helpers.cli import REPO
from tests.helpers.local_server import LocalServer

FIXTURES = REPO.parent / "shared" / "fixtures" / "inat"

if not FIXTURES.is_dir():
    if os.environ.get("CI"):
        raise RuntimeError(
            f"CI is set but the genuine iNaturalist fixtures are missing: {FIXTURES}"
        )
    pytest.skip("../shared/fixtures/inat is absent (a user's clone)", allow_module_level=True)


def load(name: str) -> dict:
    return json.loads((FIXTURES / "v1" / name).read_text())


MONARCH = Taxon(48662, "Danaus plexippus", "species")


def test_observation_photos_carry_their_own_license_and_attribution():
    (obs,) = load("get_observations_page1.json")["results"]
    (item,) = parse_observation(obs, MONARCH, size="medium", licenses=None)
    assert item.photo_id == "92152429" and item.observation_id == "57754375"
    assert item.license == "cc-by-nc"
    assert item.attribution == "(c) samroom, some rights reserved (CC BY-NC)"
    assert item.url == "https://static.inaturalist.org/photos/92152429/medium.jpg?1598551272"
    assert item.quality_grade == "research"


def test_license_filter_drops_all_rights_reserved_photos():
    (obs,) = load("get_observations_page2.json")["results"]
    assert parse_observation(obs, MONARCH, licenses=["cc-by", "cc-by-nc"]) == []
    (kept,) = parse_observation(obs, MONARCH, licenses=None)
    assert kept.license == "" and "all rights reserved" in kept.attribution


def test_multi_photo_observation_and_jpeg_extension():
    (obs,) = load("get_observation.json")["results"]
    items = parse_observation(obs, Taxon(1, "Lixus bardanae"), size="large", licenses=["cc-by"])
    assert [i.photo_id for i in items] == ["24355315", "24355313"]
    assert {i.observation_id for i in items} == {"16227955"}
    assert all(i.url.split("?")[0].endswith("/large.jpeg") for i in items)


def test_taxon_name_resolution():
    assert pick_taxon(load("get_taxa.json"), "Nicrophorus vespilloides").id == 70118
    family = pick_taxon(load("get_taxa_autocomplete.json"), "vespidae")
    assert (family.id, family.rank) == (52747, "family")
    with pytest.raises(LookupError, match="candidates: .*Vespidae"):
        pick_taxon(load("get_taxa_autocomplete.json"), "Vespa nonexistens")


def test_real_photo_passes_the_decode_check_and_html_does_not():
    class Resp:
        def __init__(self, ctype: str) -> None:
            self.headers = {"Content-Type": ctype}

    body = (FIXTURES / "obs_image.jpg").read_bytes()
    assert decode_check(Resp("image/jpeg"), body) == (206, 75)
    # not the photo (a maintenance page, a cut body): tried again, and the cut one is marked
    with pytest.raises(BadBody, match="not an image") as page:
        decode_check(Resp("text/html"), b"<html></html>")
    with pytest.raises(BadBody, match="does not decode") as cut:
        decode_check(Resp("image/jpeg"), body[: len(body) // 2])
    assert cut.value.undecodable and not page.value.undecodable
    with pytest.raises(HttpError, match="max_pixels=1000"):
        decode_check(Resp("image/jpeg"), body, max_pixels=1000)


def test_client_pages_genuine_responses_with_id_above(tmp_path: Path):
    """Serve the genuine files from 127.0.0.1 and let the real client page through them."""
    pages = [
        load("get_observations_page1.json"),
        load("get_observations_page2.json"),
        {"total_results": 2, "page": 1, "per_page": 1, "results": []},
    ]
    asked: list[dict] = []

    def answer(path: str, query: dict[str, str]) -> tuple[bytes, str]:
        if path == "/v1/taxa/48662":
            data = load("get_taxa_by_id.json")
        else:
            asked.append(query)
            data = pages[min(len(asked) - 1, 2)]
        return json.dumps(data).encode(), "application/json"

    with LocalServer(answer) as server:
        api = INatAPI(
            HttpClient(rate=50, user_agent="inat-lightning-tests", allow_http=True),
            f"{server.url}/v1",
        )
        taxon = api.resolve_taxon(48662)
        assert taxon.id == 70118 and taxon.name == "Nicrophorus vespilloides"  # what the file holds
        items = list(api.iter_photos(taxon, licenses=None, per_page=1))
    assert [i.photo_id for i in items] == ["92152429", "92075215"]
    # page 2 (genuine, default order) went *below* the last id: paging stops instead of looping
    assert [q["id_above"] for q in asked] == ["0", "57754375"]
    assert all(
        q["order_by"] == "id" and q["order"] == "asc" and q["per_page"] == "1" for q in asked
    )
