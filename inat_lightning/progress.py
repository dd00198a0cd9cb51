"""Progress that fits the output: tqdm's bar on a terminal; elsewhere (a log file, ``nohup``,
SLURM, CI) plain log lines every ``every_s`` seconds instead of carriage-return noise.

    with progress(total=200, desc="Danaus plexippus", unit="img") as bar:
        bar.update(1)
        bar.set_postfix(failed=0)
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm import tqdm

log = logging.getLogger("inat_lightning.progress")


def is_terminal() -> bool:
    """Whether stderr (where bars and log lines go) is an interactive terminal."""
    return sys.stderr.isatty()


def duration(seconds: float) -> str:
    """``3725`` → ``1h02m``, ``125`` → ``2m05s``, ``7.2`` → ``7s``; ``?`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class LineProgress:
    """The part of tqdm's interface this project uses (``update``, ``set_postfix``, iteration,
    ``close``, ``with``), written as one log line every ``every_s`` seconds and at the end:
    ``desc: 120/200 img (60%), 4.1 img/s, ETA 20s, failed=2``."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        total: int | float | None = None,
        desc: str = "",
        unit: str = "it",
        every_s: float = 30.0,
    ) -> None:
        self.iterable = iterable
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.n = 0
        self.postfix: dict[str, Any] = {}
        self.start = self._last = time.monotonic()
        self._closed = False
        self._shown = -1  # n at the last line written

    def line(self) -> str:
        """The current state as one line."""
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.n / elapsed
        parts = [f"{self.n}/{self.total:g}" if self.total else str(self.n)]
        parts[0] += f" {self.unit}"
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        parts.append(f"{rate:.1f} {self.unit}/s")
        if self.total and rate > 0:
            parts.append(f"ETA {duration((self.total - self.n) / rate)}")
        else:
            parts.append(f"elapsed {duration(elapsed)}")
        parts += [f"{k}={v}" for k, v in self.postfix.items()]
        return f"{self.desc}: " + ", ".join(parts) if self.desc else ", ".join(parts)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self._show()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def _show(self) -> None:
        self._shown = self.n
        log.info(self.line())

    def close(self) -> None:
        """A last line, unless the last one written already said it all."""
        if not self._closed and self._shown != self.n:
            self._show()
        self._closed = True

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(
    iterable: Iterable | None = None,
    *,
    total: int | float | None = None,
    desc: str = "",
    unit: str = "it",
    disable: bool = False,
    every_s: float = 30.0,
) -> tqdm | LineProgress:
    """A tqdm bar on a terminal, :class:`LineProgress` elsewhere; nothing with ``disable``."""
    if disable or is_terminal():
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=True)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, every_s=every_s)
