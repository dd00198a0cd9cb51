"""The downloader both backends feed: concurrent, polite, verified, deduplicated, resumable.

Files land as ``<root>/<taxon folder>/<photo_id>.jpg``. A body is written to ``<root>/.partial/``
first, decode-verified, then renamed into the tree (same filesystem: atomic), and only then is
its manifest row appended (flushed and fsynced). So at any crash point the tree holds only
complete, verified images, and every manifest row points to one. Re-running the same command
first clears ``.partial/``, drops rows whose file vanished, then skips what is done; a file
renamed just before a crash (no row yet) is verified and adopted when it is listed again.
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
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image

from inat_lightning.data.manifest import (
    COLUMNS,
    MANIFEST_NAME,
    Record,
    read_manifest,
    safe_folder_name,
    sha256_of,
    write_manifest,
)
from inat_lightning.progress import progress
from inat_lightning.scrape.http import HttpClient, HttpError, RetryableError
from inat_lightning.scrape.inat_api import PhotoItem

log = logging.getLogger(__name__)
PARTIAL_DIR = ".partial"
FAILURES_NAME = "failures.csv"


def decode_check(resp, body: bytes) -> tuple[int, int]:
    """Reject non-image content types and bodies that do not fully decode (truncated, HTML…)."""
    ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if ctype and not ctype.startswith("image/") and ctype != "application/octet-stream":
        raise RetryableError(f"not an image: Content-Type {ctype}")
    return decoded_size(body)


def decoded_size(body: bytes) -> tuple[int, int]:
    """(width, height) of an image body that fully decodes; :class:`RetryableError` otherwise."""
    try:
        with Image.open(io.BytesIO(body)) as img:
            img.load()
            return img.size
    except Exception as e:  # noqa: BLE001 - any decoder error means a bad body
        raise RetryableError(f"does not decode: {type(e).__name__}: {e}") from e


@dataclass
class Summary:
    listed: int = 0  # items read from the backend's list
    downloaded: int = 0
    bytes: int = 0  # downloaded bytes
    skipped: int = 0  # already on disk from an earlier run
    duplicates: int = 0  # same bytes as another photo
    failed: int = 0
    per_taxon: Counter = field(default_factory=Counter)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # photo_id, url, reason

    def line(self) -> str:
        return (
            f"listed {self.listed}, downloaded {self.downloaded} ({self.bytes / 1e6:.1f} MB), "
            f"skipped {self.skipped} (already there), duplicates {self.duplicates}, "
            f"failed {self.failed}"
        )


class Downloader:
    """Download photo items into an ImageFolder tree with a manifest.

    Args:
        root: output folder.
        client: polite HTTP client for media (its rate limit and byte budget apply).
        workers: concurrent downloads.
        max_per_taxon: stop taking items of a taxon once it has this many images (``None``: all).
        progress: show progress (a bar on a terminal, else a log line every ``progress_every``).
        progress_every: seconds between two progress lines when not on a terminal.
    """

    def __init__(
        self,
        root: str | Path,
        client: HttpClient,
        workers: int = 4,
        max_per_taxon: int | None = None,
        progress: bool = True,
        progress_every: float = 30.0,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers={workers}: must be >= 1")
        self.root = Path(root)
        self.client = client
        self.workers = workers
        self.max_per_taxon = max_per_taxon
        self.progress = progress
        self.progress_every = progress_every
        self._lock = threading.Lock()
        self.records: dict[str, Record] = {}
        self.sha_to_photo: dict[str, str] = {}
        self._reconcile()

    # ------------------------------------------------------------------ state on disk
    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    def _reconcile(self) -> None:
        """Make the manifest and the tree agree after an interrupted run."""
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.root / PARTIAL_DIR, ignore_errors=True)
        if not self.manifest_path.is_file():
            write_manifest(self.manifest_path, [])
            return
        rows = read_manifest(self.manifest_path, skip_incomplete=True)  # a crash may tear a line
        kept = [r for r in rows if (self.root / r.path).is_file()]
        for r in kept:
            self.records[r.photo_id] = r
            self.sha_to_photo.setdefault(r.sha256, r.photo_id)
        write_manifest(self.manifest_path, kept)
        if len(kept) != len(rows):
            log.warning("dropped %d manifest row(s) whose file is missing", len(rows) - len(kept))

    def _append(self, rec: Record) -> None:
        with self._lock, self.manifest_path.open("a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=COLUMNS).writerow(
                {k: "" if v is None else v for k, v in asdict(rec).items()}
            )
            f.flush()
            os.fsync(f.fileno())
            self.records[rec.photo_id] = rec

    # ------------------------------------------------------------------ one item
    def _fetch(self, item: PhotoItem) -> tuple[str, str, int]:
        """Download (or adopt) one item; returns (outcome, reason, bytes downloaded)."""
        if not item.photo_id.isdigit():  # it names the file: nothing but digits may go there
            return "failed", f"photo id {item.photo_id!r} is not a number: refused", 0
        folder = safe_folder_name(item.taxon.name)
        rel = f"{folder}/{item.photo_id}.jpg"
        final = self.root / rel
        if not final.resolve().is_relative_to(self.root.resolve()):  # a symlinked folder
            return "failed", f"{rel} would be written outside {self.root}: refused", 0
        if final.is_file():  # renamed just before a crash: adopt it if it is sound
            body = final.read_bytes()
            try:
                size = decoded_size(body)
            except RetryableError:
                final.unlink()
            else:
                return (*self._register(item, rel, sha256_of(body), size, "skipped"), 0)
        try:
            _, body = self.client.get(item.url, accept=decode_check)
        except HttpError as e:
            return "failed", str(e), 0
        with Image.open(io.BytesIO(body)) as img:  # header only: decode_check decoded it all
            size = img.size
        sha = sha256_of(body)
        with self._lock:  # check and claim in one step: concurrent twins can't both pass
            dup = self.sha_to_photo.setdefault(sha, item.photo_id)
        if dup != item.photo_id:
            return "duplicates", f"same bytes as photo {dup}", len(body)
        part = self.root / PARTIAL_DIR / f"{item.photo_id}.part"
        part.parent.mkdir(exist_ok=True)
        part.write_bytes(body)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, final)
        return (*self._register(item, rel, sha, size, "downloaded"), len(body))

    def _register(self, item: PhotoItem, rel: str, sha: str, size, outcome: str) -> tuple[str, str]:
        with self._lock:
            self.sha_to_photo.setdefault(sha, item.photo_id)
        self._append(
            Record(
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
            )
        )
        return outcome, ""

    # ------------------------------------------------------------------ many items
    def run(
        self, items: Iterable[PhotoItem], desc: str = "photos", total: int | None = None
    ) -> Summary:
        """Download ``items`` (at most ``max_per_taxon`` per taxon, counting earlier runs)."""
        summary = Summary()
        have = Counter(r.taxon_name for r in self.records.values())
        queued: set[str] = set()
        taxa_listed: set[str] = set()
        inflight: dict[Future, PhotoItem] = {}
        bar = progress(
            total=total,
            desc=desc,
            unit="img",
            disable=not self.progress,
            every_s=self.progress_every,
        )

        def settle(done: set[Future]) -> None:
            for fut in done:
                item = inflight.pop(fut)
                outcome, reason, size = fut.result()
                setattr(summary, outcome, getattr(summary, outcome) + 1)
                summary.bytes += size
                if outcome in ("downloaded", "skipped"):
                    summary.per_taxon[item.taxon.name] += 1
                else:
                    have[item.taxon.name] -= 1  # its slot is free again
                    if outcome == "failed":
                        summary.failures.append((item.photo_id, item.url, reason))
                        log.warning("failed %s: %s", item.url, reason)
                bar.set_postfix(
                    listed=summary.listed,
                    downloaded=summary.downloaded,
                    failed=summary.failed,
                    MB=f"{summary.bytes / 1e6:.1f}",
                )
                bar.update(1)

        def full() -> bool:
            """Every listed taxon is full, in-flight downloads included: stop reading the list
            (no more API pages or grid scrolls), unless a failure frees a slot."""
            cap = self.max_per_taxon
            if cap is None or any(have[t] < cap for t in taxa_listed):
                return False
            settle(set(wait(inflight).done))
            return all(have[t] >= cap for t in taxa_listed)

        with ThreadPoolExecutor(self.workers, thread_name_prefix="download") as pool:
            try:
                for item in items:
                    summary.listed += 1
                    taxa_listed.add(item.taxon.name)
                    if item.photo_id in self.records:
                        summary.skipped += 1
                        summary.per_taxon[item.taxon.name] += 1
                        bar.update(1)
                        continue
                    if item.photo_id in queued:
                        continue
                    if (
                        self.max_per_taxon is not None
                        and have[item.taxon.name] >= self.max_per_taxon
                    ):
                        if full():
                            break
                        continue
                    queued.add(item.photo_id)
                    have[item.taxon.name] += 1
                    inflight[pool.submit(self._fetch, item)] = item
                    if len(inflight) >= 2 * self.workers:  # don't list far ahead of downloads
                        done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                        settle(done)
                    if full():
                        break
                while inflight:
                    done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                    settle(done)
            finally:
                for fut in inflight:
                    fut.cancel()
                bar.close()
        shutil.rmtree(self.root / PARTIAL_DIR, ignore_errors=True)  # empty by now
        self.write_failures(summary.failures)
        return summary

    def taxon_full(self, taxon_name: str) -> bool:
        """True when the taxon already has ``max_per_taxon`` images."""
        if self.max_per_taxon is None:
            return False
        return sum(r.taxon_name == taxon_name for r in self.records.values()) >= self.max_per_taxon

    def write_failures(self, rows: list[tuple[str, str, str]]) -> None:
        """Append ``(photo_id, url or taxon, reason)`` rows to ``failures.csv``."""
        path = self.root / FAILURES_NAME
        with path.open("a", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            if f.tell() == 0:
                w.writerow(["photo_id", "url", "reason"])
            w.writerows(rows)
