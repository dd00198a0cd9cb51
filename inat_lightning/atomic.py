"""Files others may read while they are written (checkpoints, exported models, tables) appear
whole or not at all: written beside their place, then renamed onto it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same folder and suffix, this process's own) to write;
    renamed onto ``path`` when the block ends, removed if it raises: a reader, or a process
    killed meanwhile, sees the old file or the new one, never a part of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.part{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
