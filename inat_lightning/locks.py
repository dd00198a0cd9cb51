"""One way to say "this folder is mine while I run": an exclusive lock file, portable
(``filelock``), released by the OS when its process dies (a killed run leaves no stale lock),
the holder's pid written beside it for the message the next process gets."""

from __future__ import annotations

import os
from pathlib import Path

from filelock import FileLock, Timeout


class Locked(RuntimeError):
    """Another live process holds the lock; the message names it and what it holds."""


def hold(lock_path: Path, what: str) -> FileLock:
    """Take ``lock_path`` for the rest of this process's life (keep the returned lock
    referenced), or raise :class:`Locked`: ``<what> is in use by another process (pid N)``."""
    lock = FileLock(lock_path)
    holder = lock_path.with_name(lock_path.name + ".pid")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        pid = holder.read_text().strip() if holder.is_file() else ""
        raise Locked(f"{what} is in use by another process (pid {pid or '?'})") from None
    holder.write_text(str(os.getpid()))
    return lock
