"""Indexing + splitting at iNat2021's size: 2.7 M images in 10 k classes (goal: < 60 s, < 2 GB).

The listing is simulated (records built in memory, as ``scan_image_folder`` would return them),
then split three ways; a real tree of empty files (``--scan-files``) times ``os.scandir``
indexing on this disk, scaled linearly to 2.7 M. Time and peak memory (max RSS) are this
process's; the baseline is building the records alone.

    python -m bench.bench_scale [--images 2700000] [--classes 10000] [--scan-files 100000]
"""

import argparse
import resource
import tempfile
import time
from pathlib import Path

from bench.common import report
from inat_lightning.data.manifest import Record, scan_image_folder
from inat_lightning.data.split import split_records


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=2_700_000)
    ap.add_argument("--classes", type=int, default=10_000)
    ap.add_argument("--scan-files", type=int, default=100_000)
    a = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:  # real indexing cost on this disk
        root = Path(tmp)
        per = max(1, a.scan_files // 1000)
        for c in range(1000):
            d = root / f"Species {c:05d}"
            d.mkdir()
            for i in range(per):
                (d / f"{c * per + i}.jpg").touch()
        t0 = time.perf_counter()
        scanned = scan_image_folder(root)
        scan_s = time.perf_counter() - t0

    rss0 = max_rss_mb()
    t0 = time.perf_counter()
    per_class = a.images // a.classes
    names = [
        f"Species {c:05d}" for c in range(a.classes + 1)
    ]  # one string per class, as a scan has
    ids = [str(c) for c in range(a.classes + 1)]
    records = [
        Record(
            photo_id=str(i),
            observation_id=str(i // 2),
            taxon_id=ids[i // per_class],
            taxon_name=names[i // per_class],
            path=f"{names[i // per_class]}/{i}.jpg",
        )
        for i in range(a.images)
    ]
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    splits = split_records(records, (0.7, 0.15, 0.15), seed=0)
    split_s = time.perf_counter() - t0
    scan_scaled = scan_s * a.images / len(scanned)
    total = scan_scaled + split_s
    report(
        "scale",
        {
            "images": a.images,
            "classes": a.classes,
            "scan_files_measured": len(scanned),
            "scan_s_measured": round(scan_s, 2),
            "scan_s_scaled_to_images": round(scan_scaled, 1),
            "build_records_s (baseline)": round(build_s, 1),
            "split_s": round(split_s, 1),
            "split_vs_build": round(split_s / build_s, 2),
            "index_plus_split_s": round(total, 1),
            "peak_rss_mb": round(max_rss_mb()),
            "rss_before_records_mb": round(rss0),
            "test_images": splits.count("test"),
            "goal": "< 60 s and < 2048 MB",
        },
    )


if __name__ == "__main__":
    main()
