"""The scrape task behind ``scrape.py``: resolve taxa, list photos with a backend, download."""

from __future__ import annotations

import dataclasses
import gzip
import logging
import sys
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from inat_lightning.config import ConfigError, build_with, check_targets
from inat_lightning.data.card import CREDITS_NAME, write_card
from inat_lightning.data.manifest import MANIFEST_NAME, is_photo_id, read_manifest
from inat_lightning.data.taxonomy import TAXA_NAME, read_taxa, write_taxa
from inat_lightning.progress import progress
from inat_lightning.scrape.backend import PhotoItem, PhotoLister, Taxon, TaxonSource
from inat_lightning.scrape.budget import SharedByteBudget, SharedRateLimiter
from inat_lightning.scrape.download import FAILURES_NAME, Downloader, FolderLocked, Summary
from inat_lightning.scrape.http import ByteBudget, HttpClient, HttpError, RetryPolicy
from inat_lightning.scrape.inat_api import SIZES, INatAPI, parse_observation
from inat_lightning.validation import require

log = logging.getLogger(__name__)
API_MAX_BYTES = 50_000_000  # a page of 200 observations is ~1-2 MB
#: a backend's tables that cannot be read: every taxon fails with the reason (not a disk error)
UNREADABLE = (HttpError, ValueError, EOFError, gzip.BadGzipFile, FileNotFoundError)


def taxa_to_scrape(taxa: Sequence[str | int], taxa_file: str | None) -> list[str]:
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


def check_scrape_config(settings: DictConfig) -> None:
    """Fail before any request, naming the key (the backend's own arguments are checked when
    it is built, also before any request)."""
    values = dict(settings.items())
    try:
        require(
            {
                "size": (settings.size in SIZES, f"one of {SIZES}"),
                "api_rate": (settings.api_rate > 0, "> 0 requests/s"),
                "media_rate": (settings.media_rate > 0, "> 0 requests/s"),
                "workers": (settings.workers >= 1, ">= 1"),
                "retries": (settings.retries >= 0, ">= 0"),
                "timeout": (settings.timeout > 0, "> 0 s"),
                "max_per_taxon": (
                    settings.max_per_taxon is None or settings.max_per_taxon >= 1,
                    ">= 1 or null",
                ),
                "max_bytes": (settings.max_bytes > 0, "> 0"),
                "out": (not Path(settings.out).is_file(), "a folder, not a file"),
                "captive": (isinstance(settings.get("captive", False), bool), "true or false"),
            },
            values,
        )
    except ValueError as e:
        raise ConfigError(f"scrape.{e}") from e


def make_clients(
    settings: DictConfig, media_rate: float | None = None
) -> tuple[HttpClient, HttpClient]:
    """One client for the API (about 1 request/s) and one for media (``media_rate`` or
    ``scrape.media_rate``, byte budgets); both reach only the allowed hosts, over https unless
    ``allow_http``. With ``scrape.budget_dir`` the rates and byte budgets are shared by every
    scrape process using that folder (:mod:`inat_lightning.scrape.budget`)."""
    retry = RetryPolicy(settings.retries, settings.backoff, settings.max_backoff)
    hosts = {"allowed_hosts": settings.allowed_hosts, "allow_http": settings.allow_http}
    rate = media_rate or settings.media_rate
    caps = [(3600, settings.max_bytes_per_hour), (86400, settings.max_bytes_per_day)]
    shared = settings.get("budget_dir")
    if shared:
        folder = Path(str(shared)).expanduser()
        api_limiter = SharedRateLimiter(settings.api_rate, folder / "api_requests.sqlite")
        media_limiter = SharedRateLimiter(rate, folder / "media_requests.sqlite")
        budget: ByteBudget | SharedByteBudget = SharedByteBudget(
            caps, folder / "media_bytes.sqlite"
        )
    else:
        api_limiter = media_limiter = None
        budget = ByteBudget(caps)
    api = HttpClient(
        settings.api_rate,
        settings.user_agent,
        settings.timeout,
        retry,
        max_bytes=API_MAX_BYTES,
        limiter=api_limiter,
        **hosts,
    )
    media = HttpClient(
        rate,
        settings.user_agent,
        settings.timeout,
        retry,
        max_bytes=settings.max_bytes,
        byte_budget=budget,
        limiter=media_limiter,
        **hosts,
    )
    return api, media


def record_lineage(source: TaxonSource, taxon: Taxon, out: Path, known: set[str]) -> None:
    """Add the taxon's lineage to ``out/taxa.csv`` unless its id is in ``known`` (the file's
    ids, read once per scrape): one request per taxon, ever. A failure only costs the
    taxonomy-aware metrics of that taxon."""
    if str(taxon.id) in known:
        return
    try:
        write_taxa(out / TAXA_NAME, [source.taxon_entry(taxon.id)])
        known.add(str(taxon.id))
    except (LookupError, HttpError, KeyError, TypeError, ValueError, AttributeError) as e:
        log.warning(
            "%s: no lineage recorded (%s); genus/family metrics will skip it", taxon.name, e
        )


def _fail(total: Summary, downloader: Downloader, what: str, error: Exception) -> None:
    """A taxon that could not be resolved or listed: a row of ``failures.csv``."""
    total.failed += 1
    total.failures.append(("", what, str(error)))
    transient = isinstance(error, HttpError) and error.transient
    downloader.failures.record("", what, str(error), transient)
    downloader.failures.write()


def scrape(cfg: DictConfig) -> Summary:
    """Run a scrape as configured in ``cfg.scrape``; re-running it resumes. Ctrl-C or a disk
    error ends it with one line (``failures.csv`` written, the manifest consistent)."""
    check_targets(cfg)
    settings = cfg.scrape
    check_scrape_config(settings)
    names = taxa_to_scrape(settings.taxa, settings.get("taxa_file"))
    api_client, media_client = make_clients(settings)
    api = INatAPI(api_client, settings.api_url)
    run_time = {"api": api, "client": api_client, "out": settings.out}
    lister = build_with(settings.backend, "scrape.backend", run_time)
    if not isinstance(lister, PhotoLister):
        raise ConfigError(
            f"scrape.backend: {type(lister).__name__} is not a PhotoLister (subclass "
            "inat_lightning.scrape.backend.PhotoLister: see that module)"
        )
    if lister.media_rate:  # a backend with its own photo host and rate
        _, media_client = make_clients(settings, lister.media_rate)
    try:
        downloader = Downloader(
            settings.out,
            media_client,
            settings.workers,
            settings.max_per_taxon,
            settings.progress,
            settings.progress_every,
            settings.max_pixels,
            settings.retry_failed,
            settings.prune_missing,
        )
    except FolderLocked as e:
        raise ConfigError(f"scrape.out={settings.out!r}: {e}") from e
    try:
        with downloader, lister:
            total = _scrape_taxa(settings, names, api, lister, downloader)
    except KeyboardInterrupt:
        print("scrape: interrupted; re-run the same command to resume", file=sys.stderr)
        sys.exit(130)
    except OSError as e:
        print(f"scrape: stopped by a disk error: {e}; free space, then re-run", file=sys.stderr)
        sys.exit(1)
    out = Path(settings.out)
    records = read_manifest(out / MANIFEST_NAME) if (out / MANIFEST_NAME).is_file() else []
    card = write_card(out, records, card_query(settings, names))
    log.info("dataset card: %s (and %s)", card, CREDITS_NAME)
    log.info("scrape done into %s: %s", settings.out, total.line())
    if total.failed:
        log.warning("failure reasons: %s", Path(settings.out) / FAILURES_NAME)
    print(f"scrape: {total.line()} -> {settings.out}")
    return total


def card_query(settings: DictConfig, names: list[str]) -> dict[str, str]:
    """What the dataset card says of how the data was made."""
    backend = str(settings.backend._target_).rsplit(".", 1)[-1]
    source = settings.backend.get("source") or settings.api_url
    licences = settings.licenses
    return {
        "date (UTC)": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "backend": backend,
        "source": str(source),
        "taxa": ", ".join(names),
        "quality grade": str(settings.quality_grade or "any"),
        "licences asked": ", ".join(licences) if licences else "any",
        "photo size": str(settings.size),
        "max per taxon": str(settings.max_per_taxon or "no cap"),
    }


def resolve_all(source: TaxonSource, names: list[str]) -> dict[str, Taxon | Exception]:
    """Each name or id → its taxon, or the error that says why not (one table pass for a
    backend that can resolve many at once)."""
    try:
        return source.resolve_many(names)
    except UNREADABLE as e:  # its table cannot be read
        return dict.fromkeys(names, e)


def with_details(
    items: Iterable[Any], api: INatAPI, taxon: Taxon, size: str, chunk: int = 30
) -> Iterator[Any]:
    """Grid tiles carry only a photo and its observation: each tile's photo gets its
    observation's record from the API (licence, attribution, observer, date, place, captive),
    ``chunk`` observations per request, in listing order. A tile whose record does not come
    (an API fault, a record the API does not have) keeps what the tile said."""
    buffer: list[Any] = []
    for item in items:
        buffer.append(item)
        if len({getattr(i, "observation_id", None) for i in buffer}) >= chunk:
            yield from _detailed(buffer, api, taxon, size)
            buffer = []
    yield from _detailed(buffer, api, taxon, size)


def _detailed(buffer: list[Any], api: INatAPI, taxon: Taxon, size: str) -> Iterator[Any]:
    tiles = [i for i in buffer if isinstance(i, PhotoItem)]
    ids = sorted({i.observation_id for i in tiles if is_photo_id(i.observation_id)})
    found: dict[str, PhotoItem] = {}
    if ids:
        try:
            records = api.observations_by_id(ids)
        except HttpError as e:
            log.warning("%s: no details for %d observations: %s", taxon.name, len(ids), e)
            records = []
        for obs in records:
            for photo in parse_observation(obs, taxon, size):
                found[photo.photo_id] = photo
    for item in buffer:
        detail = found.get(item.photo_id) if isinstance(item, PhotoItem) else None
        keep = detail is not None and detail.observation_id == item.observation_id
        yield dataclasses.replace(detail, url=item.url) if keep else item


def wild_only(items: Iterable[Any], taxon: str) -> Iterator[Any]:
    """The listed items without captive or cultivated organisms (a zoo, a garden: where they
    live says nothing of the species' range), as iNaturalist's own training sets do; how many
    were left out is logged."""
    dropped = 0
    for item in items:
        if getattr(item, "captive", None) is True:
            dropped += 1
            continue
        yield item
    if dropped:
        log.info(
            "%s: %d captive/cultivated photos left out (scrape.captive=true keeps them)",
            taxon,
            dropped,
        )


def _scrape_taxa(
    settings: DictConfig,
    names: list[str],
    api: INatAPI,
    lister: PhotoLister,
    downloader: Downloader,
) -> Summary:
    total = Summary()
    source = lister.taxa() or api
    resolved = resolve_all(source, names)
    taxa = [t for t in resolved.values() if isinstance(t, Taxon)]
    wanted = (settings.size, settings.quality_grade, settings.licenses)
    try:
        # every requested taxon, full or not: the same query on every re-run, so the
        # selection spooled by the first run is reused and no big table is read again
        lister.plan(taxa, *wanted)
    except UNREADABLE as e:
        resolved = {name: e if isinstance(t, Taxon) else t for name, t in resolved.items()}
    known_lineages = set(read_taxa(Path(settings.out) / TAXA_NAME))
    bar = progress(
        names,
        desc="taxa",
        unit="taxon",
        disable=not settings.progress,
        every_s=settings.progress_every,
    )
    with bar:
        for name in bar:
            taxon = resolved[name]
            if not isinstance(taxon, Taxon):
                log.error("skipping taxon %r: %s", name, taxon)
                _fail(total, downloader, name, taxon)
                continue
            bar.set_postfix(taxon=taxon.name)
            record_lineage(source, taxon, Path(settings.out), known_lineages)
            if downloader.taxon_full(taxon.name):
                log.info("%s: already has %s images", taxon.name, settings.max_per_taxon)
                continue
            items = lister.iter_photos(taxon, *wanted)
            if lister.tiles_only:
                chunk = min(30, settings.max_per_taxon or 30)  # never list past the cap
                items = with_details(items, api, taxon, settings.size, chunk)
            if not settings.get("captive", False):
                items = wild_only(items, taxon.name)
            try:
                result = downloader.run(items, desc=taxon.name, total=settings.max_per_taxon)
            except HttpError as e:  # the listing itself failed
                log.error("%s: listing failed: %s", taxon.name, e)
                _fail(total, downloader, taxon.name, e)
                continue
            log.info("%s: %s", taxon.name, result.line())
            total.add(result)
    return total
