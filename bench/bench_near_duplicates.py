"""Near-duplicate photos: how well copies are found on real photos, and how fast a million are
grouped.

Quality: 96 px tiles (half-overlapping) of real photos, each with 5 mild copies (JPEG at
quality 50, two-thirds size, two-thirds and back, 10 % brighter, smaller and brighter), all
saved as JPEG. Counted for the hash alone, for both signals (hash and low frequencies) and for
both with smooth pairs checked on the photos' grain: copies found with their tile, and distinct
tiles joined with another distinct tile. Three sets: the photos the tests plant copies of
(scikit-image's, "rocket" a night sky), a held-out set the signals were not tuned on
(scikit-image's and scikit-learn's other photos) and a fresh one the grain was not tuned on
(matplotlib's Grace Hopper, scikit-image's retina, cell, clock and motorcycle).

Scale: a million random 64-bit hashes with planted near copies (0-5 bits: what re-encoding,
resizing and brightening do), a fifth of them smooth photos with low-frequency signals (a
tenth as many planted smooth copies, half of them brightened), half of those in crowds of
look-alike skies (the photos the grain check would read counted, at the decoding rate); against
decoding and hashing real photos (500 px like iNaturalist's "medium"), the rate scaled to a
million: grouping must cost a small share of making the signals. Goal: a million grouped within
a minute and 1 GB.

    python -m bench.bench_near_duplicates [--hashes 1000000] [--copies 10000] [--no-quality]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
from PIL import Image

from bench.common import report
from inat_lightning.data.near_duplicates import (
    DEFAULT_DISTANCE,
    LOWFREQ_SIDE,
    Signature,
    clusters,
    photo_grain,
    photo_signature,
)

TUNED = ("astronaut", "coffee", "chelsea", "coins", "hubble_deep_field", "immunohistochemistry")
TUNED += ("rocket",)
HELD_OUT = ("camera", "moon", "horse", "page", "brick", "grass", "gravel", "cat", "china")
HELD_OUT += ("flower",)
FRESH = ("grace_hopper", "retina", "cell", "clock", "stereo_motorcycle")
SIGNALS = {
    "hash_alone": (False, False),
    "both_signals": (True, False),
    "grain_checked": (True, True),
}


def real_photo(name: str) -> Image.Image:
    """A photo scikit-image (or, for china and flower, scikit-learn; for grace_hopper,
    matplotlib) ships."""
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return Image.fromarray(load_sample_image(f"{name}.jpg"))
    if name == "grace_hopper":
        from matplotlib import cbook

        return Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    import skimage.data as sd

    photo = getattr(sd, name)()
    return Image.fromarray(photo[0] if isinstance(photo, tuple) else photo).convert("RGB")


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    import io

    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def mild_copies(tile: Image.Image) -> list[Image.Image]:
    from PIL import ImageEnhance

    smaller = tile.resize((tile.width * 2 // 3, tile.height * 2 // 3))
    brighter = ImageEnhance.Brightness
    made = [jpeg(tile, 50), smaller, smaller.resize(tile.size), brighter(tile).enhance(1.1)]
    return [jpeg(c, 85) for c in [*made, brighter(smaller).enhance(1.1)]]


Photo = tuple[Signature, "np.ndarray | None"]  # a photo's signals and grain


def grouped(photos: list[Photo], lowfreq: bool, grain: bool) -> np.ndarray:
    """Cluster labels of ``photos`` by the hash, the low frequencies and the grain as asked."""
    return clusters(
        [s.phash for s, _ in photos],
        DEFAULT_DISTANCE,
        [s.lowfreq for s, _ in photos] if lowfreq else None,
        grain=(lambda i: photos[i][1]) if grain else None,
    )


def tile_quality(names: tuple[str, ...], side: int = 96) -> dict[str, object]:
    """Copies found and distinct tiles joined, by each set of :data:`SIGNALS`."""
    tiles: list[Photo] = []
    copies: list[list[Photo]] = []
    for name in names:
        photo = real_photo(name)
        for y in range(0, photo.height - side + 1, side // 2):
            for x in range(0, photo.width - side + 1, side // 2):
                tile = jpeg(photo.crop((x, y, x + side, y + side)), 90)
                signature = photo_signature(tile.copy())
                if signature.phash:  # a tile with structure to compare
                    tiles.append((signature, photo_grain(tile.copy())))
                    made = mild_copies(tile)
                    copies.append([(photo_signature(c.copy()), photo_grain(c)) for c in made])

    out: dict[str, object] = {"tiles": len(tiles), "copies": 5 * len(tiles)}
    flat = sum(not c.phash for made in copies for c, _ in made)
    out["copies_left_flat"] = flat  # clipped to white or black: nothing left to compare
    for key, (lowfreq, grain) in SIGNALS.items():
        found = sum(
            int(len(set(grouped([t, c], lowfreq, grain).tolist())) == 1)
            for t, made in zip(tiles, copies)
            for c in made
        )
        labels = grouped(tiles, lowfreq, grain)
        merged = int((np.bincount(labels)[labels] > 1).sum())
        out[key] = {
            "copies_missed": 5 * len(tiles) - found,
            "copies_missed_with_structure": 5 * len(tiles) - found - flat,
            "distinct_tiles_joined": merged,
            "distinct_joined_share": round(merged / len(tiles), 4),
        }
    return out


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


def lowfreq_with_crowds(n: int, copies: int, skip: int, seed: int = 0) -> tuple[list[str], int]:
    """Low-frequency signals for ``n`` photos: four in five textured (none), the rest smooth;
    half of those spread, half in 100 crowds of look-alike skies (one direction, slightly
    perturbed; tones alike); ``copies`` smooth copies of spread ones (their hashes unrelated:
    the hash of a smooth copy is unstable), none among the first and last ``skip`` photos (the
    hash copies). Returns (signals, planted)."""
    rng = np.random.default_rng(seed)
    size = LOWFREQ_SIDE**2 - 1
    smooth = rng.random(n) < 0.2
    directions = rng.integers(-127, 128, (n, size))
    shapes = rng.integers(-127, 128, (100, size))
    crowd = smooth & (rng.random(n) < 0.5)
    directions[crowd] = shapes[rng.integers(0, 100, int(crowd.sum()))]
    directions[crowd] += rng.integers(-2, 3, (int(crowd.sum()), size))
    tones = np.stack([rng.integers(150, 250, n), rng.integers(40, 140, n)], 1)
    tones[crowd] = [200, 80]
    spread = np.flatnonzero(smooth & ~crowd)
    spread = spread[(spread >= skip) & (spread < n - skip)][: 2 * copies]
    original, copy = spread[0::2], spread[1::2]
    directions[copy] = directions[original] + rng.integers(-1, 2, (len(copy), size))
    tones[copy] = tones[original]
    brightened = 1.1 * (np.exp2(tones[copy[::2]] / 32) - 1)  # half of them 10 % brighter:
    tones[copy[::2]] = np.round(32 * np.log2(1 + brightened))  # their grain decides
    raw = np.concatenate([tones, np.clip(directions, -127, 127) & 0xFF], 1).astype(np.uint8)
    return [row.tobytes().hex() if s else "" for row, s in zip(raw, smooth)], len(copy)


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
            photo_signature(img)
        done += 1
    return done / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hashes", type=int, default=1_000_000)
    ap.add_argument("--copies", type=int, default=10_000)
    ap.add_argument("--no-quality", action="store_true", help="skip the real-tile measurement")
    a = ap.parse_args()
    hashes, planted = hashes_with_copies(a.hashes, a.copies)
    lowfreq, smooth_planted = lowfreq_with_crowds(a.hashes, a.copies // 10, a.copies)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    asked: set[int] = set()

    def grain(i: int) -> None:  # no photos here: counts those the grain check would read
        asked.add(i)

    t0 = time.perf_counter()
    labels = clusters(hashes, DEFAULT_DISTANCE, lowfreq, grain=grain)
    grouping = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    found = int((np.bincount(labels) > 1).sum())
    rate = decode_and_hash_rate()
    hashing = a.hashes / rate
    quality = (
        {}
        if a.no_quality
        else {k: tile_quality(v) for k, v in (("tuned_on", TUNED), ("held_out", HELD_OUT))}
        | {"fresh": tile_quality(FRESH)}
    )
    report(
        "near_duplicates",
        {
            **quality,
            "smooth_photos": sum(bool(x) for x in lowfreq),
            "hashes": a.hashes,
            "planted_copies": planted,
            "planted_smooth_copies": smooth_planted,
            "clusters_found": found,
            "largest_cluster": int(np.bincount(labels).max()),
            "grouping_s": round(grouping, 1),
            "peak_rss_mb": round(peak_mb),
            "rss_before_grouping_mb": round(rss0 / 1024),
            "decode_and_hash_photos_per_s": round(rate, 1),
            "hashing_the_photos_s": round(hashing),
            "photos_read_for_their_grain": len(asked),
            "reading_them_s": round(len(asked) / rate, 1),
            "grouping_share_of_hashing": round(grouping / hashing, 4),
        },
    )


if __name__ == "__main__":
    main()
