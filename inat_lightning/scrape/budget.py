"""Politeness shared by a fleet: every scrape process on a machine or a shared file system
(several terminals, one Slurm job per taxon group) draws from one budget per purpose, kept on
disk, so together they never send more than one polite user may (iNaturalist: ~1 API request
per second and < 10,000 a day; < 5 GB of media an hour and < 24 GB a day).

Each budget is a small SQLite database (``<budget_dir>/<name>.sqlite``) updated in short
transactions: :class:`SharedRateLimiter` spaces requests evenly across processes (the next free
slot lives in the database), :class:`SharedByteBudget` keeps the bytes fetched in the last day.
Times are wall-clock (``time.time``): processes do not share a monotonic clock."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from inat_lightning.scrape.http import budget_delay

log = logging.getLogger(__name__)


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=60, isolation_level=None)  # transactions by hand
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # a budget, not a ledger: no fsync per request
    return db


class SharedRateLimiter:
    """At most ``rate`` acquisitions per second across every process using ``path``, evenly
    spaced (the same contract as :class:`~inat_lightning.scrape.http.RateLimiter`)."""

    def __init__(self, rate: float, path: str | Path) -> None:
        if rate <= 0:
            raise ValueError(f"rate={rate}: must be > 0 requests per second")
        self.interval, self.path = 1.0 / rate, Path(path)
        with _connect(self.path) as db:
            db.execute("CREATE TABLE IF NOT EXISTS slot (id INTEGER PRIMARY KEY, next REAL)")
            db.execute("INSERT OR IGNORE INTO slot VALUES (0, 0)")

    def acquire(self) -> None:
        db = _connect(self.path)  # one connection per call: threads and processes alike
        try:
            db.execute("BEGIN IMMEDIATE")  # the write lock: one taker of a slot at a time
            (following,) = db.execute("SELECT next FROM slot WHERE id = 0").fetchone()
            now = time.time()
            slot = max(now, following)
            db.execute("UPDATE slot SET next = ? WHERE id = 0", (slot + self.interval,))
            db.execute("COMMIT")
        finally:
            db.close()
        if slot > now:
            time.sleep(slot - now)


class SharedByteBudget:
    """Caps bytes per sliding window across every process using ``path``, e.g.
    ``[(3600, 5e9), (86400, 24e9)]``; :meth:`wait` blocks until the next body fits again (the
    same contract as :class:`~inat_lightning.scrape.http.ByteBudget`)."""

    def __init__(self, limits: Sequence[tuple[float, float | None]], path: str | Path) -> None:
        self.limits = [(float(w), cap) for w, cap in limits if cap]
        self.horizon = max((w for w, _ in self.limits), default=0.0)
        self.path = Path(path)
        with _connect(self.path) as db:
            db.execute("CREATE TABLE IF NOT EXISTS fetched (t REAL, n INTEGER)")
            db.execute("CREATE INDEX IF NOT EXISTS fetched_t ON fetched (t)")

    def _delay(self, db: sqlite3.Connection) -> float:
        now = time.time()
        db.execute("DELETE FROM fetched WHERE t <= ?", (now - self.horizon,))
        fetched = db.execute("SELECT t, n FROM fetched ORDER BY t").fetchall()
        return budget_delay(fetched, self.limits, now)

    def wait(self) -> None:
        while True:
            db = _connect(self.path)
            try:
                delay = self._delay(db)
            finally:
                db.close()
            if delay <= 0:
                return
            log.warning("shared media byte budget reached; pausing %.1f s", delay)
            time.sleep(min(delay, 60.0))

    def add(self, n: int) -> None:
        db = _connect(self.path)
        try:
            db.execute("INSERT INTO fetched VALUES (?, ?)", (time.time(), int(n)))
        finally:
            db.close()
