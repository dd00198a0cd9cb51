"""Scrape configs pointed at the fake iNaturalist (``tests/fakeinat``)."""

from __future__ import annotations

from pathlib import Path

from tests.fakeinat.server import FakeINat
from tests.helpers.cli import compose_config

CC = {"cc-by", "cc-by-nc", "cc0", "cc-by-sa"}
FAST = [
    "scrape.api_rate=20",
    "scrape.media_rate=40",
    "scrape.backoff=0.05",
    "scrape.progress=false",
    "scrape.timeout=1.5",
    "scrape.max_per_taxon=null",
    "scrape.allowed_hosts=[127.0.0.1]",  # the fake iNaturalist
    "scrape.allow_http=true",
    "scrape.budget_dir=null",  # per process (scrape_cfg gives each test a shared one of its own)
]


def scrape_cfg(tmp_path: Path, fake: FakeINat, *overrides: str):
    taxa = ",".join(t["name"] for t in fake.taxa)
    return compose_config(
        "scrape",
        tmp_path,
        f"scrape.api_url={fake.base_url}/v1",
        f"scrape.taxa=[{taxa}]",
        f"scrape.out={tmp_path / 'inat'}",
        *FAST,
        f"scrape.budget_dir={tmp_path / 'budget'}",
        *overrides,
    )
