"""Near-duplicate grouping at iNaturalist scale: a million perceptual hashes grouped into
clusters (multi-index hashing, then connected components), against decoding the photos the
hashes come from, in the same run.

The hashes are random 64-bit values with planted near copies (a copy 0-5 bits from its
original: what re-encoding, resizing and brightening do). The baseline decodes and hashes real
photos (scikit-image's, 500 px like iNaturalist's "medium") and scales that rate to a million:
grouping must cost a small share of making the hashes. Goal: grouping a million hashes within a
minute and 1 GB.

    python -m bench.bench_near_duplicates [--hashes 1000000] [--copies 10000]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
from PIL import Image

from bench.common import report
from inat_lightning.data.near_duplicates import DEFAULT_DISTANCE, clusters, photo_hash


def hashes_with_copies(n: int, copies: int, seed: int = 0) -> tuple[list[str], int]:
    """``n`` hex hashes, ``copies`` of them near copies of others; returns (hashes, planted)."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2) + rng.integers(
        0, 2, n, dtype=np.uint64
    )
    for k in range(copies):
        flips = rng.choice(64, int(rng.integers(0, DEFAULT_DISTANCE + 1)), replace=False)
        values[n - 1 - k] = values[k] ^ np.uint64(sum(1 << int(b) for b in flips))
    return [f"{int(v):016x}" for v in values], copies


def decode_and_hash_rate(seconds: float = 5.0) -> float:
    """Photos per second: open a 500 px JPEG from bytes, decode and hash it."""
    import io

    import skimage.data as sd

    blobs = []
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        photo = Image.fromarray(getattr(sd, name)()).convert("RGB")
        photo.thumbnail((500, 500))
        buf = io.BytesIO()
        photo.save(buf, "JPEG", quality=90)
        blobs.append(buf.getvalue())
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        with Image.open(io.BytesIO(blobs[done % len(blobs)])) as img:
            photo_hash(img)
        done += 1
    return done / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hashes", type=int, default=1_000_000)
    ap.add_argument("--copies", type=int, default=10_000)
    a = ap.parse_args()
    hashes, planted = hashes_with_copies(a.hashes, a.copies)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    labels = clusters(hashes, DEFAULT_DISTANCE)
    grouping = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    found = int((np.bincount(labels) > 1).sum())
    rate = decode_and_hash_rate()
    hashing = a.hashes / rate
    report(
        "near_duplicates",
        {
            "hashes": a.hashes,
            "planted_copies": planted,
            "clusters_found": found,
            "grouping_s": round(grouping, 1),
            "peak_rss_mb": round(peak_mb),
            "rss_before_grouping_mb": round(rss0 / 1024),
            "decode_and_hash_photos_per_s": round(rate, 1),
            "hashing_the_photos_s": round(hashing),
            "grouping_share_of_hashing": round(grouping / hashing, 4),
        },
    )


if __name__ == "__main__":
    main()
