"""What a server sends never aborts a scrape: the genuine API responses of ../shared/fixtures/inat/
mutated (a field deleted, a type swapped, a value nulled, a value wrapped in the wrong
container, the page's ``results`` of the wrong shape) and served from 127.0.0.1; every scrape
ends normally with every valid photo of the page, and what it skipped is in ``failures.csv`` as
``malformed``."""

from __future__ import annotations

import copy
import csv
import io
import json
import random
from pathlib import Path

import pytest
from PIL import Image

from inat_lightning.data.manifest import read_manifest
from inat_lightning.scrape.scraper import scrape
from tests.helpers.cli import REPO, compose_config
from tests.helpers.local_server import LocalServer
from tests.helpers.scrape import FAST

FIXTURES = REPO.parent / "shared" / "fixtures" / "inat"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="../shared/fixtures/inat is absent")
TAXON = {"id": 48662, "name": "Danaus plexippus", "rank": "species", "is_active": True}


def genuine_observations() -> list[dict]:
    """The genuine observations of the fixtures, ascending ids, photo URLs on 127.0.0.1 later."""
    found = []
    for name in (
        "get_observations_page1.json",
        "get_observations_page2.json",
        "get_observation.json",
    ):
        found += json.loads((FIXTURES / "v1" / name).read_text())["results"]
    return sorted(found, key=lambda o: o["id"])


def paths(node, prefix=()):
    """Every (path, value) inside a JSON value."""
    yield prefix, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from paths(v, (*prefix, i))


SWAPS = [
    lambda v: None,  # null it
    lambda v: [v],  # wrap in a list
    lambda v: {"value": v},  # wrap in an object
    lambda v: "abc" if not isinstance(v, str) else 12345,  # another type
    lambda v: {} if isinstance(v, list) else [],  # the other container
    lambda v: "²³",  # digits that are not ASCII
]


#: where the parsing looks: most mutations land here, the rest anywhere in the record
PARSED = {"id", "photos", "user", "quality_grade", "observed_on", "url", "license_code", "login"}


def mutate(obs: dict, rng: random.Random) -> tuple[object, str]:
    """A copy of ``obs`` with one mutation at a random place (mostly where parsing looks)."""
    obs = copy.deepcopy(obs)
    if rng.random() < 0.1:
        return rng.choice([None, [obs], "obs", 42]), "the record replaced"
    every = [p for p, _ in paths(obs) if p]
    parsed = [p for p in every if p[-1] in PARSED or (len(p) == 2 and p[0] == "photos")]
    path = rng.choice(parsed if rng.random() < 0.8 else every)
    parent = obs
    for k in path[:-1]:
        parent = parent[k]
    if rng.random() < 0.25 and isinstance(parent, dict):
        del parent[path[-1]]
        return obs, f"delete {path}"
    swap = rng.randrange(len(SWAPS))
    parent[path[-1]] = SWAPS[swap](parent[path[-1]])
    return obs, f"swap#{swap} {path}"


def genuine_photo(photo_id: str) -> bytes:
    """The genuine observation photo, its corner marked by the id (distinct bytes per photo: the
    scrape keeps one copy of identical files)."""
    with Image.open(FIXTURES / "obs_image.jpg") as img:
        img = img.convert("RGB")
    img.putpixel((0, 0), (int(photo_id) % 256, int(photo_id) // 256 % 256, 7))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


class Server(LocalServer):
    """The API and the photos from 127.0.0.1: one page of observations, then an empty one."""

    def __init__(self, page: object) -> None:
        self.page = page
        super().__init__(self.answer)

    def answer(self, path: str, query: dict[str, str]) -> tuple[bytes, str]:
        if path.startswith("/photos/"):
            return genuine_photo(path.split("/")[2]), "image/png"
        if path == "/v1/taxa":
            data: object = {"results": [TAXON]}
        elif path.startswith("/v1/taxa/"):
            data = {"results": [{**TAXON, "ancestors": []}]}
        elif query.get("id_above") == "0":
            data = self.page
        else:
            data = {"results": []}
        return json.dumps(data).encode(), "application/json"


def local_urls(observations: list[dict], base: str) -> None:
    for obs in observations:
        for p in obs["photos"]:
            p["url"] = f"{base}/photos/{p['id']}/square.jpg"


def run_scrape(tmp_path: Path, make_page) -> tuple[set[str], list[dict]]:
    """Scrape the page ``make_page(server_url)`` (photo URLs must point at the server)."""
    server = Server(None)
    try:
        server.page = make_page(server.url)
        cfg = compose_config(
            "scrape",
            tmp_path,
            f"scrape.api_url={server.url}/v1",
            f"scrape.taxa=[{TAXON['name']}]",
            f"scrape.out={tmp_path / 'inat'}",
            "scrape.licenses=null",
            "scrape.quality_grade=null",
            "scrape.retries=1",
            *FAST,
        )
        scrape(cfg)  # never raises on what the server sends
    finally:
        server.close()
    out = tmp_path / "inat"
    got = (
        {r.photo_id for r in read_manifest(out / "manifest.csv")}
        if (out / "manifest.csv").is_file()
        else set()
    )
    failures = (
        list(csv.DictReader((out / "failures.csv").open()))
        if (out / "failures.csv").is_file()
        else []
    )
    return got, failures


def photo_ids(obs: dict) -> set[str]:
    return {str(p["id"]) for p in obs["photos"]}


@pytest.mark.parametrize("seed", range(24))
def test_a_mutated_record_is_skipped_and_reported_and_the_page_goes_on(tmp_path, seed):
    rng = random.Random(seed)
    observations = genuine_observations()
    victim = rng.randrange(len(observations))
    found = {}

    def page(base_url: str) -> dict:
        local_urls(observations, base_url)
        mutated, found["how"] = mutate(observations[victim], rng)
        results = [*observations[:victim], mutated, *observations[victim + 1 :]]
        return {"total_results": 3, "page": 1, "per_page": 200, "results": results}

    got, failures = run_scrape(tmp_path, page)
    how = found["how"]
    others = set().union(*(photo_ids(o) for i, o in enumerate(observations) if i != victim))
    assert others <= got, how  # every valid photo of the page
    lost = photo_ids(observations[victim]) - got
    assert got - others <= photo_ids(observations[victim]), how  # nothing made up
    if lost:  # a photo not downloaded is a photo reported
        assert any(f["kind"] == "malformed" for f in failures), (how, failures)


@pytest.mark.parametrize(
    "page",
    [
        {"results": {"0": "an object, not a list"}},
        {"results": "a string"},
        ["a list, not an object"],
        {"results": [None, 5, "x", []]},
    ],
)
def test_a_page_of_the_wrong_shape_is_retried_then_reported_for_its_taxon(tmp_path, page):
    got, failures = run_scrape(tmp_path, lambda base_url: page)
    assert got == set()
    assert failures and all(f["photo_id"] == "" for f in failures)
    assert any(TAXON["name"] in f["url"] for f in failures), failures
