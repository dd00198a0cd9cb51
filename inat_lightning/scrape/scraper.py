"""The scrape task behind ``scrape.py``: resolve taxa, list photos with a backend, download."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from inat_lightning.config import ConfigError, check_targets
from inat_lightning.scrape.browser import BrowserConfig, BrowserLister
from inat_lightning.scrape.download import FAILURES_NAME, Downloader, Summary
from inat_lightning.scrape.http import ByteBudget, HttpClient, HttpError, RetryPolicy
from inat_lightning.scrape.inat_api import SIZES, INatAPI, PhotoItem, Taxon

log = logging.getLogger(__name__)
BACKENDS = ("api", "browser")
API_MAX_BYTES = 50_000_000  # a page of 200 observations is ~1-2 MB


class ApiLister:
    """Lists photos through the API (the default backend: faster and kinder to the site)."""

    def __init__(self, api: INatAPI, per_page: int = 200, max_pages: int = 10_000) -> None:
        self.api, self.per_page, self.max_pages = api, per_page, max_pages

    def iter_photos(
        self,
        taxon: Taxon,
        size: str,
        limit: int | None = None,
        quality_grade: str | None = None,
        licenses: Sequence[str] | None = None,
    ) -> Iterator[PhotoItem]:
        yield from self.api.iter_photos(
            taxon, size, quality_grade, licenses, self.per_page, self.max_pages
        )

    def __enter__(self) -> ApiLister:
        return self

    def __exit__(self, *exc) -> None:
        pass


def read_taxa(taxa: Sequence[str | int], taxa_file: str | None) -> list[str]:
    """Taxa from the config list plus a file (one per line, ``#`` comments), duplicates removed."""
    out = [str(t).strip() for t in taxa or []]
    if taxa_file:
        path = Path(taxa_file)
        if not path.is_file():
            raise ConfigError(f"scrape.taxa_file={taxa_file!r}: no such file")
        out += [ln.split("#")[0].strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    out = list(dict.fromkeys(t for t in out if t))
    if not out:
        raise ConfigError(
            "scrape.taxa: give at least one taxon name or id, e.g. "
            "scrape.taxa='[Danaus plexippus,48662]' (or scrape.taxa_file=list.txt)"
        )
    return out


def check_scrape_config(s: DictConfig) -> None:
    """Fail before any request, naming the key."""
    checks = {
        "size": (s.size in SIZES, f"one of {SIZES}"),
        "backend.name": (s.backend.name in BACKENDS, f"one of {BACKENDS}"),
        "api_rate": (s.api_rate > 0, "> 0 requests/s"),
        "media_rate": (s.media_rate > 0, "> 0 requests/s"),
        "workers": (s.workers >= 1, ">= 1"),
        "retries": (s.retries >= 0, ">= 0"),
        "timeout": (s.timeout > 0, "> 0 s"),
        "max_per_taxon": (s.max_per_taxon is None or s.max_per_taxon >= 1, ">= 1 or null"),
        "max_bytes": (s.max_bytes > 0, "> 0"),
    }
    for key, (ok, want) in checks.items():
        if not ok:
            raise ConfigError(f"scrape.{key}={OmegaConf.select(s, key)!r}: must be {want}")
    if Path(s.out).is_file():
        raise ConfigError(f"scrape.out={s.out!r}: is a file, expected a folder")


def make_clients(s: DictConfig) -> tuple[HttpClient, HttpClient]:
    """One client for the API (about 1 request/s) and one for media (rate + byte budgets)."""
    retry = RetryPolicy(s.retries, s.backoff, s.max_backoff)
    api = HttpClient(s.api_rate, s.user_agent, s.timeout, retry, max_bytes=API_MAX_BYTES)
    media = HttpClient(
        s.media_rate,
        s.user_agent,
        s.timeout,
        retry,
        max_bytes=s.max_bytes,
        byte_budget=ByteBudget([(3600, s.max_bytes_per_hour), (86400, s.max_bytes_per_day)]),
    )
    return api, media


def make_lister(backend: DictConfig, api: INatAPI) -> ApiLister | BrowserLister:
    options = {
        k: v for k, v in OmegaConf.to_container(backend, resolve=True).items() if k != "name"
    }
    if backend.name == "api":
        return ApiLister(api, **options)
    return BrowserLister(BrowserConfig(**options))


def _fail(total: Summary, downloader: Downloader, what: str, reason: str) -> None:
    total.failed += 1
    total.failures.append(("", what, reason))
    downloader.write_failures([("", what, reason)])


def scrape(cfg: DictConfig) -> Summary:
    """Run a scrape as configured in ``cfg.scrape``; re-running it resumes."""
    check_targets(cfg)
    s = cfg.scrape
    check_scrape_config(s)
    names = read_taxa(s.taxa, s.get("taxa_file"))
    api_client, media_client = make_clients(s)
    api = INatAPI(api_client, s.api_url)
    try:
        lister = make_lister(s.backend, api)
    except TypeError as e:
        raise ConfigError(f"scrape.backend: {e}") from e
    downloader = Downloader(s.out, media_client, s.workers, s.max_per_taxon, s.progress)

    total = Summary()
    with lister, tqdm(names, desc="taxa", unit="taxon", disable=not s.progress) as bar:
        for name in bar:
            try:
                taxon = api.resolve_taxon(name)
            except (LookupError, HttpError) as e:
                log.error("skipping taxon %r: %s", name, e)
                _fail(total, downloader, name, f"taxon lookup: {e}")
                continue
            bar.set_postfix(taxon=taxon.name)
            if downloader.taxon_full(taxon.name):
                log.info("%s: already has %s images, nothing to do", taxon.name, s.max_per_taxon)
                continue
            items = lister.iter_photos(taxon, s.size, s.max_per_taxon, s.quality_grade, s.licenses)
            try:
                result = downloader.run(items, desc=taxon.name, total=s.max_per_taxon)
            except HttpError as e:  # the listing itself failed for good
                log.error("%s: listing failed: %s", taxon.name, e)
                _fail(total, downloader, taxon.name, f"listing: {e}")
                continue
            log.info("%s: %s", taxon.name, result.line())
            for key in ("downloaded", "skipped", "duplicates", "failed"):
                setattr(total, key, getattr(total, key) + getattr(result, key))
            total.per_taxon.update(result.per_taxon)
            total.failures += result.failures
    log.info("scrape done into %s: %s", s.out, total.line())
    if total.failed:
        log.warning("failure reasons: %s", Path(s.out) / FAILURES_NAME)
    print(f"scrape: {total.line()} -> {s.out}")
    return total
