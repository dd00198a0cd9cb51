"""Shared helpers of the benchmarks (run them from the repo root: ``python -m bench.<name>``)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable


def machine() -> str:
    import torch  # here, so benchmarks that measure memory don't pay for it

    return (
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )


def rate(fn: Callable[[], int], repeats: int = 3) -> float:
    """Items per second of ``fn`` (which returns how many items it processed): the median of
    ``repeats`` runs, so one noisy run does not decide."""
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def report(name: str, results: dict) -> None:
    """Print the results as JSON, for docs/benchmarks.md."""
    print(json.dumps({"bench": name, "machine": machine(), **results}, indent=2))
