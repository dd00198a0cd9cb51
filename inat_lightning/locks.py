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
    holder = lock_path.with_name(lock_path.name + ".pid")
    if lock_path.is_symlink():  # planted in a shared folder: never opened (truncated) through
        lock_path.unlink()
    lock = FileLock(lock_path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        pid = holder.read_text().strip() if holder.is_file() and not holder.is_symlink() else ""
        raise Locked(f"{what} is in use by another process (pid {pid or '?'})") from None
    holder.unlink(missing_ok=True)  # ours now; a symlink there is replaced, not followed
    fd = os.open(holder, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    return lock
