"""The open-data backend (``scrape/backend=opendata``): photos listed from iNaturalist's monthly
open-data export instead of the API, for data sets beyond the API's daily cap.

The export is four gzipped, tab-separated tables with a header row and **no quoting** (quote
characters are plain text inside fields): ``taxa.csv.gz`` (``taxon_id, ancestry, rank_level,
rank, name, active``), ``observations.csv.gz`` (``observation_uuid, observer_id, latitude,
longitude, positional_accuracy, taxon_id, quality_grade, observed_on[, anomaly_score]``),
``photos.csv.gz`` (``photo_uuid, photo_id, observation_uuid, observer_id, extension, license,
width, height, position``) and ``observers.csv.gz`` (``observer_id, login, name``). They are read
from a local folder or streamed from the bucket, one pass each, so memory holds only the
selection, never a table:

1. ``taxa``: the requested taxa (by name or id; active taxa first), their active descendants
   (a taxon whose ``ancestry`` contains a requested id belongs to the most specific requested
   one), and the names of their ancestors (for ``taxa.csv``);
2. ``observations``: those of the selected taxa with the wanted quality grade;
3. ``observers``: logins and names of their observers (attributions);
4. ``photos``: their photos with a wanted license, written to one spool file per taxon under
   ``<out>/.opendata/`` (reused by a re-run with the same query, so a resumed scrape does not
   read the export again).

Photo URLs follow the bucket's layout ``photos/<photo_id>/<size>.<extension>``.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import json
import logging
import math
import os
from collections.abc import Container, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from inat_lightning.atomic import replacing
from inat_lightning.data.manifest import is_photo_id
from inat_lightning.data.taxonomy import RANKS, TaxonEntry
from inat_lightning.scrape.backend import PhotoItem, PhotoLister, Taxon, TaxonSource
from inat_lightning.scrape.http import HttpClient
from inat_lightning.scrape.inat_api import number_in
from inat_lightning.validation import require

log = logging.getLogger(__name__)
BUCKET = "https://inaturalist-open-data.s3.amazonaws.com"
#: the export's column layout, as its headers have it (monthly since 2021; tests and benchmarks
#: write files in it)
LAYOUT = {
    "taxa": ("taxon_id", "ancestry", "rank_level", "rank", "name", "active"),
    "observations": (
        "observation_uuid",
        "observer_id",
        "latitude",
        "longitude",
        "positional_accuracy",
        "taxon_id",
        "quality_grade",
        "observed_on",
        "anomaly_score",
    ),
    "photos": (
        "photo_uuid",
        "photo_id",
        "observation_uuid",
        "observer_id",
        "extension",
        "license",
        "width",
        "height",
        "position",
    ),
    "observers": ("observer_id", "login", "name"),
}
#: the columns this backend reads, per table (others may come and go)
TABLES = {
    "taxa": ("taxon_id", "ancestry", "rank_level", "rank", "name", "active"),
    "observations": (
        "observation_uuid",
        "observer_id",
        "taxon_id",
        "quality_grade",
        "observed_on",
        "latitude",
        "longitude",
        "positional_accuracy",
    ),
    "photos": ("photo_id", "observation_uuid", "extension", "license"),
    "observers": ("observer_id", "login", "name"),
}
TAXA_CACHE = "taxa.json"  # the taxa table's answers, kept with the selection
SPOOL_DIR = ".opendata"
_SPOOL_COLUMNS = (
    "photo_id",
    "observation_uuid",
    "url",
    "license",
    "attribution",
    "grade",
    "observer_id",
    "observer",
    "observed_on",
    "latitude",
    "longitude",
    "positional_accuracy",
)


def spooled_place(values: dict[str, str]) -> dict[str, float | None]:
    """The export's latitude, longitude and positional accuracy of a spool row (empty or not a
    number in range: unknown). The export has no obscured or captive flag."""
    lat = number_in(values.get("latitude"), -90, 90)
    lon = number_in(values.get("longitude"), -180, 180)
    if lat is None or lon is None:
        lat = lon = None
    accuracy = number_in(values.get("positional_accuracy"), 0, math.inf)
    return {"latitude": lat, "longitude": lon, "pos_accuracy": accuracy}


def license_code(value: str) -> str:
    """``CC-BY-NC`` → ``cc-by-nc`` (the API's codes); all rights reserved → ``""``."""
    code = value.strip().lower().replace(" ", "-")
    return "" if code in ("", "all-rights-reserved", "arr", "none", "null") else code


def attribution(observer: str, code: str) -> str:
    """iNaturalist's attribution text for a photo: ``(c) name, some rights reserved (CC BY)``."""
    if code == "cc0":
        return f"no rights reserved (CC0), by {observer}"
    if not code:
        return f"(c) {observer}, all rights reserved"
    return f"(c) {observer}, some rights reserved ({code.upper().replace('CC-', 'CC ', 1)})"


class Tables:
    """The export's tables, from a local folder or streamed from a URL (through the scrape's
    client: its allow-list and rate limit apply)."""

    def __init__(self, source: str, remote: bool, client: HttpClient | None) -> None:
        self.source, self.remote, self.client = source, remote, client

    @contextmanager
    def lines(self, table: str) -> Iterator[tuple[dict[str, int], Iterator[bytes]]]:
        """The table's columns and lines, streamed and decompressed."""
        name = f"{table}.csv.gz"
        if not self.remote:
            with read_table(gzip.open(Path(self.source) / name, "rb"), table) as found:
                yield found
            return
        if self.client is None:
            raise ValueError("a URL source needs the scrape's HTTP client")
        resp = self.client.open_stream(f"{self.source}/{name}")
        try:
            with read_table(gzip.GzipFile(fileobj=resp.raw), table) as found:
                yield found
        finally:
            resp.close()

    def rows(self, table: str) -> Iterator[dict[str, str]]:
        """Whole rows as dicts, for the small tables (taxa, observers); torn lines skipped."""
        with self.lines(table) as (columns, lines):
            names = list(columns)
            for line in lines:
                row = cells(line)
                if len(row) == len(names):
                    yield dict(zip(names, row))


def select_observations(
    tables: Tables, selection: dict[str, int], quality_grade: str | None
) -> dict[bytes, tuple[int, str, str, str, str, str, str]]:
    """Observation uuid (bytes, as the photos table is read) → (requested taxon id,
    observer id, observed_on, quality grade, latitude, longitude, positional accuracy)."""
    out = {}
    by_id = {k.encode(): v for k, v in selection.items()}
    with tables.lines("observations") as (c, lines):
        iu, io_, it, iq, id_ = (
            c["observation_uuid"],
            c["observer_id"],
            c["taxon_id"],
            c["quality_grade"],
            c["observed_on"],
        )
        where = [c[k] for k in ("latitude", "longitude", "positional_accuracy")]
        width = len(c)
        for line in lines:
            raw = line.split(b"\t")
            if len(raw) < width or raw[it] not in by_id:
                continue
            row = cells(line)
            if len(row) != width or (quality_grade and row[iq] != quality_grade):
                continue
            place = tuple(row[i] for i in where)
            out[raw[iu]] = (by_id[raw[it]], row[io_], row[id_], row[iq], *place)
    return out


def observer_names(tables: Tables, ids: set[str]) -> dict[str, tuple[str, str]]:
    """Observer id → (login, display name: the name, else the login)."""
    return {
        row["observer_id"]: (row["login"], row["name"] or row["login"])
        for row in tables.rows("observers")
        if row["observer_id"] in ids
    }


def write_spool(
    tables: Tables,
    spools: dict[int, Path],
    observations: dict[bytes, tuple[int, str, str, str, str, str, str]],
    observers: dict[str, tuple[str, str]],
    photo_url: tuple[str, str],
    licenses: Sequence[str] | None,
) -> None:
    """One pass over ``photos``: each selected photo as a row of its taxon's spool (``spools``:
    taxon id → file; ``photo_url``: the photo host and the size asked for)."""
    photo_base, size = photo_url
    wanted = None if licenses is None else {x.lower() for x in licenses}
    files = {k: p.with_suffix(".part").open("w", encoding="utf-8") for k, p in spools.items()}
    writers = {k: csv.writer(f, delimiter="\t", lineterminator="\n") for k, f in files.items()}
    try:
        with tables.lines("photos") as (columns, lines):
            for found in select_photos(columns, lines, observations):
                code = license_code(found["license"])
                if wanted is not None and code not in wanted:
                    continue
                uuid = found["observation_uuid"]
                taxon_id, observer_id, observed_on, grade, *place = observations[uuid.encode()]
                login, shown = observers.get(observer_id, ("", observer_id))
                photo = found["photo_id"]
                url = f"{photo_base}/photos/{photo}/{size}.{found['extension']}"
                credit = attribution(shown, code)
                row = [photo, uuid, url, code, credit, grade, observer_id, login, observed_on]
                writers[taxon_id].writerow([*row, *place])
    finally:
        for f in files.values():
            f.close()
    for path in spools.values():
        os.replace(path.with_suffix(".part"), path)


def spooled_item(values: dict[str, str], taxon: Taxon) -> PhotoItem:
    """A spool row (its columns by name) as the photo item it was selected as."""
    return PhotoItem(
        photo_id=values["photo_id"],
        observation_id=values["observation_uuid"],
        taxon=taxon,
        url=values["url"],
        license=values["license"],
        attribution=values["attribution"],
        quality_grade=values["grade"],
        observer_id=values["observer_id"],
        observer=values["observer"],
        observed_on=values["observed_on"],
        **spooled_place(values),
    )


class OpenDataLister(PhotoLister, TaxonSource):
    """Lists photos from the open-data export (see the module doc).

    Args:
        source: a local folder holding the four ``*.csv.gz`` files (downloaded once), or the
            bucket's URL (streamed; its host must be in ``scrape.allowed_hosts``).
        photo_base: where photos are fetched: ``<photo_base>/photos/<id>/<size>.<ext>``.
        media_rate: photo requests per second from the bucket (S3 takes more than the site;
            ``null``: ``scrape.media_rate``).
        out: the scrape's output folder (given at run time): the per-taxon spool lives there.
        client: the API client of the scrape (given at run time), used to stream tables from a
            URL source; its allow-list and rate limit apply.
    """

    def __init__(
        self,
        source: str = BUCKET,
        photo_base: str = BUCKET,
        media_rate: float | None = 20.0,
        out: str | Path = ".",
        client: HttpClient | None = None,
    ) -> None:
        remote = source.startswith(("http://", "https://"))
        rules = {
            "source": (
                remote or Path(source).is_dir(),
                "a folder with the *.csv.gz files, or a URL",
            ),
            "media_rate": (media_rate is None or media_rate > 0, "> 0 or null"),
        }
        require(rules, {"source": source, "media_rate": media_rate})
        self.source = source.rstrip("/")
        self.tables = Tables(self.source, remote, client)  # holds where and how tables are read
        self.photo_base = photo_base.rstrip("/")
        self.media_rate = media_rate
        self.out = Path(out)
        self.entries: dict[str, TaxonEntry] = {}
        self._taxa: dict[str, Taxon] = {}  # requested name or id → taxon
        self._ancestry: dict[int, list[str]] = {}

    def taxa(self) -> TaxonSource:
        """Its own tables: taxa resolved and their lineage read without the API."""
        return self

    # ------------------------------------------------------------------ taxa
    def resolve_many(self, queries: Sequence[str]) -> dict[str, Taxon | Exception]:
        """Each query (a name or an id) → its taxon, from one pass over ``taxa`` (or, on a
        re-run, from the spool: no table is read again): an id matches exactly; a name matches
        case-insensitively, an active taxon before an inactive one."""
        cached = self._cached_taxa().get("resolved", {})
        if queries and all(q in cached for q in queries):
            for q in queries:
                tid, name, rank, ancestry = cached[q]
                self._ancestry[int(tid)] = list(ancestry)
                self._taxa[q] = Taxon(int(tid), name, rank)
            log.info("open data: taxa resolved from the spool (%d)", len(queries))
            return {q: self._taxa[q] for q in queries}
        wanted = {q.strip().lower(): q for q in queries}
        found: dict[str, tuple[bool, dict[str, str]]] = {}
        for row in self.tables.rows("taxa"):
            for key in (row["taxon_id"], row["name"].lower()):
                if key in wanted:
                    active = row["active"].lower() == "true"
                    if key not in found or (active and not found[key][0]):
                        found[key] = (active, row)
        out: dict[str, Taxon | Exception] = {}
        for key, query in wanted.items():
            if key not in found:
                out[query] = LookupError(f"taxon {query!r} not in the open-data taxa table")
                continue
            row = found[key][1]
            taxon = Taxon(int(row["taxon_id"]), row["name"], row["rank"])
            self._ancestry[taxon.id] = [a for a in row["ancestry"].split("/") if a]
            out[query] = self._taxa[query] = taxon
        return out

    def _cached_taxa(self) -> dict:
        """The spool's record of resolved taxa and lineages, when made from this source."""
        path = self.out / SPOOL_DIR / TAXA_CACHE
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        same = isinstance(found, dict) and found.get("source") == [self.source, self.photo_base]
        return found if same else {}

    def _write_cached_taxa(self) -> None:
        """Keep what the taxa table said (queries → taxa, lineages) beside the selection, so a
        re-run resolves and plans without reading it (atomically: several readers)."""
        found = {
            "source": [self.source, self.photo_base],
            "resolved": {
                q: [t.id, t.name, t.rank, self._ancestry.get(t.id, [])]
                for q, t in self._taxa.items()
            },
            "entries": {k: dataclasses.asdict(e) for k, e in self.entries.items()},
        }
        with replacing(self.out / SPOOL_DIR / TAXA_CACHE) as tmp:
            tmp.write_text(json.dumps(found))

    def resolve_taxon(self, name_or_id: str | int) -> Taxon:
        if str(name_or_id) not in self._taxa:
            result = self.resolve_many([str(name_or_id)])[str(name_or_id)]
            if isinstance(result, LookupError):
                raise result
        return self._taxa[str(name_or_id)]

    def taxon_entry(self, taxon_id: int) -> TaxonEntry:
        """The lineage found by :meth:`plan` (``taxa.csv`` of the scrape)."""
        if str(taxon_id) not in self.entries:
            raise LookupError(f"taxon {taxon_id}: no lineage (not planned)")
        return self.entries[str(taxon_id)]

    # ------------------------------------------------------------------ selection
    def _spool(self, taxon: Taxon) -> Path:
        return self.out / SPOOL_DIR / f"{taxon.id}.tsv"

    def plan(
        self,
        taxa: Sequence[Taxon],
        size: str = "medium",
        quality_grade: str | None = None,
        licenses: Sequence[str] | None = None,
    ) -> None:
        """Select the photos of ``taxa`` (descendants included) into the per-taxon spool; a
        spool written for the same query and source is reused."""
        asked = sorted(licenses) if licenses is not None else None
        ids = sorted(t.id for t in taxa)
        query = json.dumps([self.source, self.photo_base, ids, size, quality_grade, asked])
        stamp = self.out / SPOOL_DIR / "query.json"
        if stamp.is_file() and stamp.read_text() == query:
            entries = self._cached_taxa().get("entries", {})
            if all(str(t.id) in entries for t in taxa):
                for k, e in entries.items():
                    self.entries[k] = TaxonEntry(**{**e, "ancestor_ids": tuple(e["ancestor_ids"])})
                log.info("open data: reusing the selection in %s", stamp.parent)
                return
        selection = self._select_taxa(taxa)
        observations = select_observations(self.tables, selection, quality_grade)
        observers = observer_names(self.tables, {o[1] for o in observations.values()})
        (self.out / SPOOL_DIR).mkdir(parents=True, exist_ok=True)
        spools = {t.id: self._spool(t) for t in taxa}
        write_spool(self.tables, spools, observations, observers, (self.photo_base, size), licenses)
        self._write_cached_taxa()
        stamp.write_text(query)

    def _select_taxa(self, taxa: Sequence[Taxon]) -> dict[str, int]:
        """Taxon id → the requested taxon it counts for (itself or its most specific requested
        ancestor, active taxa only); fills :attr:`entries` with the requested taxa's lineages."""
        requested = {str(t.id): t for t in taxa}
        needed_names = {a for t in taxa for a in self._ancestry.get(t.id, [])}
        names: dict[str, tuple[str, str]] = {}
        selection = {tid: int(tid) for tid in requested}
        for row in self.tables.rows("taxa"):
            tid = row["taxon_id"]
            if tid in needed_names:
                names[tid] = (row["rank"], row["name"])
            if row["active"].lower() != "true" or tid in requested:
                continue
            path = [a for a in row["ancestry"].split("/") if a in requested]
            if path:
                selection[tid] = int(path[-1])
        for t in taxa:
            ancestors = self._ancestry.get(t.id, [])
            lineage = {names[a][0]: names[a][1] for a in ancestors if a in names}
            lineage = {r: n for r, n in lineage.items() if r in RANKS}
            if t.rank in RANKS:
                lineage[t.rank] = t.name
            self.entries[str(t.id)] = TaxonEntry(
                str(t.id), t.name, t.rank, tuple(ancestors), lineage
            )
        return selection

    def iter_photos(
        self,
        taxon: Taxon,
        size: str = "medium",
        quality_grade: str | None = None,
        licenses: Sequence[str] | None = None,
    ) -> Iterator[PhotoItem]:
        """The taxon's selected photos (after :meth:`plan`), in the export's order."""
        spool = self._spool(taxon)
        if not spool.is_file():
            self.plan([taxon], size, quality_grade, licenses)
        with spool.open(encoding="utf-8", newline="") as f:
            for row in csv.reader(f, delimiter="\t"):
                yield spooled_item(dict(zip(_SPOOL_COLUMNS, row)), taxon)


@contextmanager
def read_table(
    raw: io.BufferedIOBase, table: str
) -> Iterator[tuple[dict[str, int], Iterator[bytes]]]:
    """An open-data table from a binary stream of it (decompressed, e.g. ``gzip.open``): its
    columns (name → index; the required ones of :data:`TABLES` checked) and its lines as bytes
    (line ends kept: callers decode the few rows they keep, see :func:`cells`). Tab-separated,
    no quoting: a quote is an ordinary character."""
    try:
        lines = io.BufferedReader(raw, 1 << 20)  # large reads: the line loop is the cost
        header = cells(lines.readline())
        missing = [c for c in TABLES[table] if c not in header]
        if missing:
            raise ValueError(f"{table}.csv.gz: columns {missing} missing (header: {header})")
        yield {c: i for i, c in enumerate(header)}, lines
    finally:
        raw.close()


def cells(line: bytes) -> list[str]:
    """A table line's fields (UTF-8, undecodable bytes replaced)."""
    return line.decode("utf-8", "replace").rstrip("\r\n").split("\t")


def select_photos(
    columns: dict[str, int], lines: Iterator[bytes], observations: Container[bytes]
) -> Iterator[dict[str, str]]:
    """Rows of the ``photos`` table whose observation (its uuid, as bytes) is selected. Only the
    selected rows are decoded and split whole: the others cost one partial split of the raw
    line and a set lookup (2.22× a ``csv`` loop, measured: bench/bench_opendata.py).
    Photo ids must be digits (they name files); other rows are skipped with a warning."""
    obs_col, width = columns["observation_uuid"], len(columns)
    wanted = TABLES["photos"]
    for line in lines:
        head = line.split(b"\t", obs_col + 1)
        if len(head) <= obs_col + 1 or head[obs_col] not in observations:
            continue  # (the uuid is never the last column of the real layout)
        row = cells(line)
        if len(row) != width:
            continue
        found = {c: row[columns[c]] for c in wanted}
        if not is_photo_id(found["photo_id"]):
            log.warning("skipping a photo whose id is not a number: %r", found["photo_id"])
            continue
        yield found
