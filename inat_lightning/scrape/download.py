"""The downloader both backends feed: concurrent, polite, verified, deduplicated, resumable.

Files land as ``<root>/<taxon folder>/<photo_id>.jpg``. A body is decode-verified, written to
``<root>/.partial/`` and synced to disk, renamed into the tree (same filesystem: atomic), and
only then is its manifest row appended (flushed and synced). So at any crash point the tree
holds only complete, verified images, and every manifest row points to one.

The manifest is the user's data: a re-run keeps columns it does not know and rows whose file is
missing (reported; dropped only with ``prune_missing``, after a ``manifest.csv.bak``), and a lock
file refuses a second scrape into the same folder. Every photo ends as an outcome (downloaded,
skipped, duplicate, failed): no exception from one photo leaves its worker. ``failures.csv``
says why each failed and whether the fault was transient (a re-run tries again) or permanent (a
re-run skips it unless ``retry_failed``); it is written even when the scrape is interrupted.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import threading
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from filelock import FileLock, Timeout
from PIL import Image

from inat_lightning.atomic import replacing
from inat_lightning.data.manifest import (
    DEFAULT_MAX_PIXELS,
    MANIFEST_NAME,
    Record,
    date_or_empty,
    header_of,
    is_photo_id,
    read_manifest,
    safe_folder_name,
    sha256_of,
    unique_records,
    write_manifest,
)
from inat_lightning.data.near_duplicates import photo_signature
from inat_lightning.progress import progress
from inat_lightning.scrape.backend import PhotoItem
from inat_lightning.scrape.http import HttpClient, HttpError, RetryableError
from inat_lightning.scrape.inat_api import Malformed

log = logging.getLogger(__name__)
PARTIAL_DIR = ".partial"
FAILURES_NAME = "failures.csv"
LOCK_NAME = ".scrape.lock"


class BadBody(RetryableError):
    """A 200 whose body is not the image asked for: a maintenance or proxy error page, or bytes
    that do not decode (cut short, damaged on the way). Retried like a transient fault;
    ``undecodable`` marks an image body that does not decode (permanent if it never does)."""

    def __init__(self, message: str, undecodable: bool = False) -> None:
        super().__init__(message)
        self.undecodable = undecodable


def decode_check(resp, body: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of a photo response's body. A body that is not an image (a non-image
    content type, an HTML page with 200) or does not fully decode is a :class:`BadBody` (try
    again); one that announces too many pixels is an :class:`HttpError` (for good)."""
    ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if ctype and not ctype.startswith("image/") and ctype != "application/octet-stream":
        raise BadBody(f"not an image: Content-Type {ctype}")
    try:
        return decoded_size(body, max_pixels)
    except Undecodable as e:
        raise BadBody(str(e), undecodable=True) from e


class PhotoCheck:
    """The body check of one photo's download (``HttpClient.get``'s ``accept``), remembering
    why each try was refused: an image that decodes wrongly on every try is a definite answer
    (permanent), anything else that is not the photo may pass (transient)."""

    def __init__(self, max_pixels: int) -> None:
        self.max_pixels = max_pixels
        self.refusals: list[BadBody] = []

    def __call__(self, resp, body: bytes) -> tuple[int, int]:
        try:
            return decode_check(resp, body, self.max_pixels)
        except BadBody as e:
            self.refusals.append(e)
            raise

    def never_decoded(self, tries: int) -> bool:
        """Every one of ``tries`` tries got an image body that did not decode."""
        return len(self.refusals) >= tries and all(e.undecodable for e in self.refusals)


class Undecodable(HttpError):
    """An image body that does not fully decode."""


def decoded_size(body: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of an image body that fully decodes and announces at most
    ``max_pixels`` pixels (checked before decoding); :class:`HttpError` otherwise
    (:class:`Undecodable` when it does not decode)."""
    try:
        with Image.open(io.BytesIO(body)) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise HttpError(f"{width}x{height} pixels exceeds max_pixels={max_pixels}")
            img.load()
            return img.size
    except HttpError:
        raise
    except Image.DecompressionBombError as e:  # Pillow's own guard, far above max_pixels
        raise HttpError(f"exceeds max_pixels={max_pixels} (a decompression bomb): {e}") from e
    except Exception as e:  # noqa: BLE001 - any decoder error means a bad body
        raise Undecodable(f"does not decode: {type(e).__name__}: {e}") from e


class Outcome(NamedTuple):
    """What became of one photo: ``kind`` is downloaded, skipped, duplicates or failed."""

    kind: str
    reason: str = ""
    bytes: int = 0
    transient: bool = False


class Failure(NamedTuple):
    """A row of ``failures.csv``: a photo (or, with no ``photo_id``, a taxon's listing)."""

    photo_id: str
    url: str
    reason: str
    # transient (a re-run tries again) | permanent (skipped unless retry_failed) | malformed (a
    # record the server sent that is not what its API documents: skipped, the listing goes on)
    kind: str


def failure_key(failure: Failure) -> str:
    """What identifies a failure across runs: the photo, else the listing (a taxon, or for a
    malformed record the place and the problem: two bad records of a taxon are two rows)."""
    if failure.photo_id:
        return failure.photo_id
    return f"{failure.url}\0{failure.reason}" if failure.kind == "malformed" else failure.url


class FolderLocked(RuntimeError):
    """Another scrape is writing into the same folder."""


@dataclass
class Summary:
    listed: int = 0  # items read from the backend's list
    downloaded: int = 0
    bytes: int = 0  # downloaded bytes
    skipped: int = 0  # already on disk from an earlier run
    duplicates: int = 0  # same bytes as another photo
    failed: int = 0
    malformed: int = 0  # records of the listing that were not what the API documents
    known_failures: int = 0  # failed for good in an earlier run: not tried again
    per_taxon: Counter = field(default_factory=Counter)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # photo_id, url, reason

    def line(self) -> str:
        return (
            f"listed {self.listed}, downloaded {self.downloaded} ({self.bytes / 1e6:.1f} MB), "
            f"skipped {self.skipped} (already there), duplicates {self.duplicates}, "
            f"failed {self.failed}, skipped {self.known_failures} that failed for good before"
            + (f", {self.malformed} malformed records skipped" if self.malformed else "")
        )

    def add(self, other: Summary) -> None:
        """Add another summary's counts, per-taxon tallies and failures to this one."""
        names = ("listed", "downloaded", "bytes", "skipped", "duplicates", "failed", "malformed")
        for name in names:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.known_failures += other.known_failures
        self.per_taxon.update(other.per_taxon)
        self.failures += other.failures


def lock_folder(root: Path) -> FileLock:
    """An exclusive lock on ``<root>/.scrape.lock`` for this process's lifetime (portable:
    ``filelock``; the OS releases it if the process dies, so a killed scrape leaves no stale
    lock). The holder's pid is written beside it, for the message another scrape gets."""
    lock = FileLock(root / LOCK_NAME)
    holder = root / f"{LOCK_NAME}.pid"
    try:
        lock.acquire(timeout=0)
    except Timeout:
        pid = holder.read_text().strip() if holder.is_file() else "?"
        raise FolderLocked(f"another scrape (pid {pid or '?'}) is writing into {root}") from None
    holder.write_text(str(os.getpid()))
    return lock


def _csv_text(rows: list) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()


class FailureLog:
    """``failures.csv``: the photos (and taxa's listings) that failed and are not resolved yet,
    keyed by photo id (or URL); shared by the download threads."""

    def __init__(self, path: Path, retry_failed: bool = False) -> None:
        self.path, self.retry_failed = path, retry_failed
        self._lock = threading.Lock()
        self.failures: dict[str, Failure] = {}
        if path.is_file():
            with path.open(newline="", encoding="utf-8") as f:
                for row in csv.DictReader(f):
                    values = {k: row.get(k) or "" for k in Failure._fields}
                    kind = values["kind"] or "transient"  # files from before the column
                    failure = Failure(**{**values, "kind": kind})
                    self.failures[failure_key(failure)] = failure

    def record(
        self, photo_id: str, url: str, reason: str, transient: bool, kind: str | None = None
    ) -> None:
        """Remember a failure (a photo, or a taxon's listing when ``photo_id`` is empty)."""
        kind = kind or ("transient" if transient else "permanent")
        failure = Failure(photo_id, url, reason, kind)
        with self._lock:
            self.failures[failure_key(failure)] = failure

    def resolved(self, photo_id: str) -> None:
        with self._lock:
            self.failures.pop(photo_id, None)

    def failed_for_good(self, photo_id: str) -> bool:
        """A permanent failure of an earlier run, not to be tried again (``retry_failed``)."""
        failure = self.failures.get(photo_id)
        return failure is not None and failure.kind == "permanent" and not self.retry_failed

    def write(self) -> None:
        """Rewrite the file (atomically) with every failure not yet resolved."""
        with self._lock, replacing(self.path) as tmp:
            rows = [Failure._fields, *self.failures.values()]
            tmp.write_text(_csv_text(rows), encoding="utf-8", newline="")


def reconcile(root: Path, prune_missing: bool) -> tuple[list[Record], set[str], list[str]]:
    """Pick up after an interrupted run: clear ``.partial/``, drop a line torn by a crash and
    superseded rows; keep everything else, rows with a missing file included (reported; dropped
    with ``prune_missing``, ``manifest.csv.bak`` first). Returns the rows kept, the photo ids
    whose file is missing, and the manifest's header."""
    shutil.rmtree(root / PARTIAL_DIR, ignore_errors=True)
    path = root / MANIFEST_NAME
    if not path.is_file():
        write_manifest(path, [])
        return [], set(), header_of([])
    rows = read_manifest(path, skip_incomplete=True)  # a crash may tear a line
    kept = unique_records(rows, str(path))
    missing = {r.photo_id for r in kept if not (root / r.path).is_file()}
    if missing and prune_missing:
        backup = path.with_name(MANIFEST_NAME + ".bak")
        shutil.copy2(path, backup)
        kept = [r for r in kept if r.photo_id not in missing]
        log.warning(
            "dropped %d row(s) whose file is missing; the old manifest: %s", len(missing), backup
        )
        missing = set()
    elif missing:
        log.warning(
            "%d manifest row(s) point to missing files (a drive not mounted?); kept, and "
            "fetched again if listed (scrape.prune_missing=true drops them)",
            len(missing),
        )
    if len(kept) != len(rows):
        write_manifest(path, kept)
    return kept, missing, header_of(kept)


def record_of(item: PhotoItem, rel: str, body: bytes, sha: str, size: tuple[int, int]) -> Record:
    """A downloaded photo's manifest row: what its listing said, its checksum ``sha``, its size
    and its near-duplicate signals (made from the bytes in hand, so training never decodes the
    photo for them)."""
    with Image.open(io.BytesIO(body)) as img:
        signature = photo_signature(img)
    return Record(
        photo_id=item.photo_id,
        observation_id=item.observation_id,
        taxon_id=str(item.taxon.id),
        taxon_name=item.taxon.name,
        path=rel,
        license=item.license,
        attribution=item.attribution,
        url=item.url,
        sha256=sha,
        width=size[0],
        height=size[1],
        quality_grade=item.quality_grade,
        observer_id=item.observer_id,
        observer=item.observer,
        observed_on=date_or_empty(item.observed_on),  # the API's: untrusted
        phash=signature.phash,
        lowfreq=signature.lowfreq,
        latitude=item.latitude,
        longitude=item.longitude,
        pos_accuracy=item.pos_accuracy,
        coords_obscured=item.coords_obscured,
        captive=item.captive,
    )


class Downloader:
    """Download photo items into an ImageFolder tree with a manifest (see the module doc).

    Use it as a context manager (or call :meth:`close`): it holds the folder's lock.

    Args:
        root: output folder.
        client: polite HTTP client for media (its rate limit, byte budget and allowed hosts).
        workers: concurrent downloads.
        max_per_taxon: stop taking items of a taxon once it has this many images (``None``: all).
        progress: show progress (a bar on a terminal, else a log line every ``progress_every``).
        progress_every: seconds between two progress lines when not on a terminal.
        max_pixels: refuse images announcing more pixels (decompression bombs).
        retry_failed: try again the photos that failed for good in an earlier run.
        prune_missing: drop manifest rows whose file is missing (``manifest.csv.bak`` first).
    """

    def __init__(
        self,
        root: str | Path,
        client: HttpClient,
        workers: int = 4,
        max_per_taxon: int | None = None,
        progress: bool = True,
        progress_every: float = 30.0,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        retry_failed: bool = False,
        prune_missing: bool = False,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers={workers}: must be >= 1")
        self.root = Path(root)
        self.client = client
        self.workers = workers
        self.max_per_taxon = max_per_taxon
        self.progress = progress
        self.progress_every = progress_every
        self.max_pixels = max_pixels
        self.retry_failed = retry_failed
        self.prune_missing = prune_missing
        self._lock = threading.Lock()
        self.records: dict[str, Record] = {}
        self.missing: set[str] = set()  # photo ids whose row is kept but whose file is not there
        self.sha_to_photo: dict[str, str] = {}
        self._header: list[str] = []
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_file = lock_folder(self.root)
        self.failures = FailureLog(self.root / FAILURES_NAME, retry_failed)
        self._reconcile()

    # ------------------------------------------------------------------ the folder
    def close(self) -> None:
        """Release the folder's lock."""
        if self._lock_file and self._lock_file.is_locked:
            self._lock_file.release()

    def __enter__(self) -> Downloader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    def _on_disk(self, record: Record) -> bool:
        """Known at start-up (one ``stat`` per row, in :meth:`_reconcile`) and kept up to date."""
        return record.photo_id not in self.missing

    def _reconcile(self) -> None:
        """Pick up after an interrupted run (see :func:`reconcile`)."""
        kept, self.missing, self._header = reconcile(self.root, self.prune_missing)
        for r in kept:
            self.records[r.photo_id] = r
            if self._on_disk(r):
                self.sha_to_photo.setdefault(r.sha256, r.photo_id)

    def _append(self, rec: Record) -> None:
        with self._lock, self.manifest_path.open("a", newline="", encoding="utf-8") as f:
            old = self.records.get(rec.photo_id)
            if old is not None and old.extra:  # a missing file fetched again keeps its notes
                rec.extra = old.extra
            csv.DictWriter(f, fieldnames=self._header, restval="").writerow(rec.row())
            f.flush()
            os.fsync(f.fileno())
            self.records[rec.photo_id] = rec
            self.missing.discard(rec.photo_id)

    # ------------------------------------------------------------------ one item
    def _fetch_contained(self, item: PhotoItem) -> Outcome:
        """:meth:`_fetch`, with any error of this one photo turned into its outcome. Only a
        disk error (``OSError``: disk full, read-only) ends the scrape: it is not the photo's."""
        try:
            return self._fetch(item)
        except OSError:
            raise
        except Exception as e:  # noqa: BLE001 - one photo's fault must not end the scrape
            log.exception("photo %s: unexpected error", item.photo_id)
            return Outcome("failed", f"unexpected {type(e).__name__}: {e}")

    def _fetch(self, item: PhotoItem) -> Outcome:
        """Download (or adopt) one item."""
        if not is_photo_id(item.photo_id):  # it names the file: nothing but digits may go there
            return Outcome("failed", f"photo id {item.photo_id!r} is not a number: refused")
        folder = safe_folder_name(item.taxon.name)
        rel = f"{folder}/{item.photo_id}.jpg"
        final = self.root / rel
        if not final.resolve().is_relative_to(self.root.resolve()):  # a symlinked folder
            return Outcome("failed", f"{rel} would be written outside {self.root}: refused")
        if final.is_file():  # renamed just before a crash: adopt it if it is sound
            body = final.read_bytes()
            try:
                size = decoded_size(body, self.max_pixels)
            except HttpError:
                final.unlink()
            else:
                return self._register(item, rel, body, sha256_of(body), size, "skipped")
        check = PhotoCheck(self.max_pixels)
        try:
            _, body = self.client.get(item.url, accept=check)
        except HttpError as e:
            if check.never_decoded(self.client.retry.retries + 1):  # a definite answer
                return Outcome("failed", f"{e} (on every try)", transient=False)
            return Outcome("failed", str(e), transient=e.transient)
        with Image.open(io.BytesIO(body)) as img:  # header only: decode_check decoded it all
            size = img.size
        sha = sha256_of(body)
        with self._lock:  # check and claim in one step: concurrent twins can't both pass
            dup = self.sha_to_photo.setdefault(sha, item.photo_id)
        if dup != item.photo_id:
            return Outcome("duplicates", f"same bytes as photo {dup}", len(body))
        part = self.root / PARTIAL_DIR / f"{item.photo_id}.part"
        part.parent.mkdir(exist_ok=True)
        with part.open("wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())  # on disk before its name and its row say it is there
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, final)
        return self._register(item, rel, body, sha, size, "downloaded", len(body))

    def _register(
        self, item: PhotoItem, rel: str, body: bytes, sha: str, size, kind: str, nbytes: int = 0
    ) -> Outcome:
        """Append the photo's manifest row (:func:`record_of`)."""
        with self._lock:
            self.sha_to_photo.setdefault(sha, item.photo_id)
        self._append(record_of(item, rel, body, sha, size))
        return Outcome(kind, bytes=nbytes)

    # ------------------------------------------------------------------ many items
    def run(
        self,
        items: Iterable[PhotoItem | Malformed],
        desc: str = "photos",
        total: int | None = None,
    ) -> Summary:
        """Download ``items`` (at most ``max_per_taxon`` per taxon, counting earlier runs).
        ``failures.csv`` is rewritten when it ends, however it ends."""
        current = _Run(self, desc, total)
        try:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="download") as pool:
                try:
                    for item in items:
                        if not current.take(item, pool):
                            break
                    current.drain()
                finally:
                    current.cancel()
        finally:
            shutil.rmtree(self.root / PARTIAL_DIR, ignore_errors=True)  # nothing half-written
            self.failures.write()
        return current.summary

    def taxon_full(self, taxon_name: str) -> bool:
        """True when the taxon already has ``max_per_taxon`` images on disk."""
        if self.max_per_taxon is None:
            return False
        on_disk = (r for r in self.records.values() if r.taxon_name == taxon_name)
        return sum(self._on_disk(r) for r in on_disk) >= self.max_per_taxon


class _Run:
    """One :meth:`Downloader.run`: its counts, each taxon's slots (photos on disk or in flight
    against ``max_per_taxon``), the downloads in flight and the progress bar."""

    def __init__(self, downloader: Downloader, desc: str, total: int | None) -> None:
        self.d = downloader
        self.summary = Summary()
        on_disk = [r for r in downloader.records.values() if downloader._on_disk(r)]
        self.have = Counter(r.taxon_name for r in on_disk)
        self.queued: set[str] = set()
        self.taxa_listed: set[str] = set()
        self.inflight: dict[Future, PhotoItem] = {}
        self.bar = progress(
            total=total,
            desc=desc,
            unit="img",
            disable=not downloader.progress,
            every_s=downloader.progress_every,
        )

    def take(self, item: PhotoItem | Malformed, pool: ThreadPoolExecutor) -> bool:
        """Count, skip or queue one listed item; ``False`` once the list need not be read on
        (every listed taxon full)."""
        summary, d = self.summary, self.d
        if isinstance(item, Malformed):  # reported, and the listing goes on
            summary.malformed += 1
            summary.failures.append(("", item.what, item.reason))
            d.failures.record("", item.what, item.reason, False, "malformed")
            return True
        summary.listed += 1
        self.taxa_listed.add(item.taxon.name)
        known = d.records.get(item.photo_id)
        if known is not None and d._on_disk(known):
            summary.skipped += 1
            summary.per_taxon[item.taxon.name] += 1
            self.bar.update(1)
            return True
        if item.photo_id in self.queued:
            return True
        if d.failures.failed_for_good(item.photo_id):
            summary.known_failures += 1
            return True
        if d.max_per_taxon is not None and self.have[item.taxon.name] >= d.max_per_taxon:
            return not self.full()
        self.queued.add(item.photo_id)
        self.have[item.taxon.name] += 1
        self.inflight[pool.submit(d._fetch_contained, item)] = item
        if len(self.inflight) >= 2 * d.workers:  # don't list far ahead
            done, _ = wait(self.inflight, return_when=FIRST_COMPLETED)
            self.settle(done)
        return not self.full()

    def settle(self, done: set[Future]) -> None:
        """Count finished downloads; a failed or dropped one frees its taxon's slot."""
        summary, d = self.summary, self.d
        for fut in done:
            item = self.inflight.pop(fut)
            outcome = fut.result()
            setattr(summary, outcome.kind, getattr(summary, outcome.kind) + 1)
            summary.bytes += outcome.bytes
            if outcome.kind in ("downloaded", "skipped"):
                summary.per_taxon[item.taxon.name] += 1
                d.failures.resolved(item.photo_id)
            else:
                self.have[item.taxon.name] -= 1  # its slot is free again
                if outcome.kind == "failed":
                    summary.failures.append((item.photo_id, item.url, outcome.reason))
                    d.failures.record(item.photo_id, item.url, outcome.reason, outcome.transient)
                    log.warning("failed %s: %s", item.url, outcome.reason)
            self.bar.set_postfix(
                listed=summary.listed,
                downloaded=summary.downloaded,
                failed=summary.failed,
                MB=f"{summary.bytes / 1e6:.1f}",
            )
            self.bar.update(1)

    def full(self) -> bool:
        """Every listed taxon is full, in-flight downloads included: stop reading the list
        (no more API pages or grid scrolls), unless a failure frees a slot."""
        cap = self.d.max_per_taxon
        if cap is None or any(self.have[t] < cap for t in self.taxa_listed):
            return False
        self.settle(set(wait(self.inflight).done))
        return all(self.have[t] >= cap for t in self.taxa_listed)

    def drain(self) -> None:
        while self.inflight:
            done, _ = wait(self.inflight, return_when=FIRST_COMPLETED)
            self.settle(done)

    def cancel(self) -> None:
        for fut in self.inflight:
            fut.cancel()
        self.bar.close()
