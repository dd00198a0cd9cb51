"""Selecting photos from the open-data export's ``photos.csv.gz`` at full size (10 M rows):
listing rate (rows/s) and peak memory of the open-data backend's reader
(:func:`~inat_lightning.scrape.opendata.select_photos`) against a plain ``csv`` loop over the
same file, in the same run. Goal: at least the plain loop's rate, peak memory < 1 GB.

A synthetic ``photos.csv.gz`` in the real column layout is written first (1 % of its observations
are "selected", as a scrape of some taxa would select); each reader then runs in its own process,
so each peak RSS is its own.

    python -m bench.bench_opendata [--rows 10000000] [--every 100]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LICENCES = ("CC-BY", "CC-BY-NC", "CC0", "CC-BY-SA", "CC-BY-NC-ND")


def obs_uuid(obs: int) -> str:
    return f"{obs:08x}-5e1e-4c7d-8a0b-{obs * 7919 % 16**12:012x}"


def write_photos(path: Path, rows: int) -> None:
    """``rows`` photos, 1–3 per observation, in the real layout (tab-separated, no quoting)."""
    from inat_lightning.scrape.opendata import LAYOUT  # here: the readers' peak RSS stays theirs

    with gzip.open(path, "wt", compresslevel=1, newline="") as f:
        f.write("\t".join(LAYOUT["photos"]) + "\n")
        obs, chunk = 0, []
        for i in range(rows):
            if i % 3 != 1:
                obs += 1
            chunk.append(
                f"{i:08x}-0000-4000-8000-{i:012x}\t{100_000_000 + i}\t{obs_uuid(obs)}\t"
                f"{obs % 500_000}\tjpeg\t{LICENCES[i % 5]}\t2048\t1536\t{i % 3}\n"
            )
            if len(chunk) == 100_000:
                f.write("".join(chunk))
                chunk = []
        f.write("".join(chunk))


def selected(rows: int, every: int) -> set[str]:
    """Every ``every``-th observation's uuid (observations ≤ rows)."""
    return {obs_uuid(o) for o in range(0, rows + 1, every)}


def plain(path: Path, wanted: set[str]) -> int:
    hits = 0
    with gzip.open(path, "rt", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        obs_col = next(reader).index("observation_uuid")
        for row in reader:
            if row[obs_col] in wanted:
                hits += 1
    return hits


def ours(path: Path, wanted: set[str]) -> int:
    from inat_lightning.scrape.opendata import read_table, select_photos  # imported already

    keys = {k.encode() for k in wanted}  # the backend keeps the selection as raw bytes
    with read_table(gzip.open(path, "rb"), "photos") as (columns, lines):
        return sum(1 for _ in select_photos(columns, lines, keys))


def worker(kind: str, path: Path, rows: int, every: int) -> None:
    wanted = selected(rows, every)
    if kind == "ours":  # the import is not the reading
        import inat_lightning.scrape.opendata  # noqa: F401
    t0 = time.perf_counter()
    hits = {"plain": plain, "ours": ours}[kind](path, wanted)
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps({"hits": hits, "rows_per_s": rows / seconds, "seconds": seconds, "peak_mb": rss})
    )


def run(kind: str, path: Path, rows: int, every: int) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "bench.bench_opendata",
        "--worker",
        kind,
        "--file",
        str(path),
        "--rows",
        str(rows),
        "--every",
        str(every),
    ]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--every", type=int, default=100, help="select every Nth observation")
    ap.add_argument("--worker", choices=("plain", "ours"))
    ap.add_argument("--file", type=Path)
    a = ap.parse_args()
    if a.worker:
        worker(a.worker, a.file, a.rows, a.every)
        return
    from bench.common import report

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "photos.csv.gz"
        t0 = time.perf_counter()
        write_photos(path, a.rows)
        written = time.perf_counter() - t0
        runs = {k: [run(k, path, a.rows, a.every) for _ in range(2)] for k in ("plain", "ours")}
        size_mb = path.stat().st_size / 1e6
    best = {k: max(r["rows_per_s"] for r in v) for k, v in runs.items()}
    peak = {k: max(r["peak_mb"] for r in v) for k, v in runs.items()}
    assert runs["plain"][0]["hits"] == runs["ours"][0]["hits"], "readers disagree"
    report(
        "opendata",
        {
            "rows": a.rows,
            "file_mb": round(size_mb, 1),
            "generated_s": round(written, 1),
            "selected_photos": runs["ours"][0]["hits"],
            "plain_csv_rows_per_s": round(best["plain"]),
            "ours_rows_per_s": round(best["ours"]),
            "ratio": round(best["ours"] / best["plain"], 2),
            "plain_peak_mb": round(peak["plain"]),
            "ours_peak_mb": round(peak["ours"]),
        },
    )


if __name__ == "__main__":
    main()
