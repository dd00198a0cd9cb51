"""Downloader images/s against the fake iNaturalist with 100 ms added latency per response:
our concurrent downloader vs a sequential one-at-a-time loop (the seed's wget method), with the
server's request log checking that the configured rate limit is never exceeded (goal: >= 10x).

    python -m bench.bench_downloader [--photos 120] [--workers 16] [--rate 40]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench.common import report
from inat_lightning.scrape.backend import PhotoItem, Taxon
from inat_lightning.scrape.download import Downloader
from inat_lightning.scrape.http import HttpClient
from tests.fakeinat.server import FakeINat


def max_per_second(times: list[float]) -> int:
    """The most requests that arrived within any 1-second window."""
    return max(sum(t0 <= t < t0 + 1.0 for t in times) for t0 in times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=240)
    ap.add_argument("--workers", type=int, default=24)
    ap.add_argument("--rate", type=float, default=150.0, help="media requests/s allowed")
    ap.add_argument("--latency", type=float, default=0.1)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "requests.json"
        server = subprocess.Popen(  # its own process: the client does not share its GIL
            [
                sys.executable,
                "-m",
                "tests.fakeinat.server",
                "--observations",
                str(a.photos // 2),
                "--max-photos",
                "1",
                "--latency",
                str(a.latency),
                "--log",
                str(log),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            base = server.stdout.readline().strip()
            fake = FakeINat(
                num_taxa=2, observations_per_taxon=a.photos // 2, max_photos=1
            )  # same data
            taxon = Taxon(1, "Any species")
            items = [
                PhotoItem(str(p), str(o.id), taxon, f"{base}/photos/{p}/medium.jpg")
                for o in fake.observations
                for p in o.photo_ids
            ]

            t0 = time.perf_counter()
            for it in items:  # the baseline: one request at a time, no checks
                body = requests.get(it.url, timeout=30).content
                (Path(tmp) / f"{it.photo_id}.jpg").write_bytes(body)
            sequential = len(items) / (time.perf_counter() - t0)
            t_start = time.monotonic()

            client = HttpClient(
                rate=a.rate, user_agent="inat-lightning-bench", timeout=30, allow_http=True
            )
            dl = Downloader(Path(tmp) / "tree", client, workers=a.workers, progress=False)
            t0 = time.perf_counter()
            summary = dl.run(items)
            concurrent = summary.downloaded / (time.perf_counter() - t0)
        finally:
            server.terminate()
            server.wait(timeout=30)
        times = [t for t, k, _ in json.loads(log.read_text()) if k == "photo" and t >= t_start]
    report(
        "downloader",
        {
            "photos": len(items),
            "latency_s": a.latency,
            "workers": a.workers,
            "rate_limit_per_s": a.rate,
            "sequential_per_s": round(sequential, 1),
            "concurrent_per_s": round(concurrent, 1),
            "ratio": round(concurrent / sequential, 2),
            "max_requests_in_any_1s_window": max_per_second(times),
            # arrival times carry the network's jitter: ~10 ms at 150/s is 1.5 requests
            "rate_limit_held": max_per_second(times) <= a.rate * 1.02 + 1,
            "goal": ">= 10x",
        },
    )


if __name__ == "__main__":
    main()
