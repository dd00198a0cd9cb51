"""Near-duplicate photos: the same shot uploaded twice, re-encoded, resized, cropped a little or
brightened, under another file name or on another observation. Split by observation, such
copies still land in train and test and inflate the test score; here they are found and kept
together.

- :func:`photo_hash`: a 64-bit perceptual hash (``imagehash.phash``: the DCT of a 32×32 grey
  thumbnail) as 16 hex digits, stored in the manifest's ``phash`` column; computed once, at
  download (from the bytes in hand) or when a folder is indexed.
- :func:`near_pairs`: every pair within ``max_distance`` bits, sub-quadratically: multi-index
  hashing (Norouzi et al.) — the 64 bits cut into 3 chunks, at least one of which differs by at
  most ``max_distance // 3`` bits between any two near hashes; candidates come from sorted
  chunk tables (each probe a binary search) and are verified on all 64 bits.
- :func:`clusters`: connected components of the near pairs (a chain of copies is one cluster).
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path

import numpy as np
from filelock import FileLock
from PIL import Image

from inat_lightning.data.manifest import Record
from inat_lightning.progress import progress

HASH_BITS = 64
_HEX16 = re.compile(r"[0-9a-f]{16}")
CHUNKS = ((0, 22), (22, 21), (43, 21))  # (shift, width): 64 bits in 3 chunks
#: the default ``data.split.near_distance``. Measured on the photos scikit-image ships: JPEG
#: at quality 50, half size or 15 % brighter move a photo's hash by 0-4 bits (a 3 % crop on each
#: side by 4-12: pHash is not made for crops); distinct photos are 20-40 bits apart. Up to 5,
#: each of the 3 chunks is probed at radius 1 (23 probes): a million hashes in seconds.
DEFAULT_DISTANCE = 5
#: the least grey-level standard deviation (of 255) of a photo's 32×32 thumbnail that is hashed
MIN_STRUCTURE = 2.0


def photo_hash(image: Image.Image) -> str:
    """The photo's 64-bit perceptual hash, 16 hex digits; ``""`` for a photo without structure
    to compare (a flat or nearly flat thumbnail: every such photo has the same hash, and they
    are not copies of each other). An image not yet decoded is decoded at reduced size where
    the format allows (JPEG's DCT scaling: pHash looks at a 32×32 thumbnail), so hashing costs a
    fraction of a full decode."""
    import imagehash  # only where hashes are made

    image.draft("RGB", (128, 128))
    thumbnail = image.convert("L").resize((32, 32), Image.Resampling.LANCZOS)
    if float(np.asarray(thumbnail, dtype=np.float32).std()) < MIN_STRUCTURE:
        return ""
    return str(imagehash.phash(thumbnail, hash_size=8))


def hash_file(root: Path, relative: str, max_pixels: int) -> str:
    """The hash of a photo inside ``root`` (checked as training reads it); ``""`` when it
    cannot be read (the dataset reports and skips such photos)."""
    from inat_lightning.data.dataset import open_checked

    try:
        with Image.open(open_checked(root, relative, max_pixels)) as image:
            return photo_hash(image)
    except (OSError, ValueError, Image.DecompressionBombError):
        return ""


def fill_hashes(
    root: Path,
    records: Sequence[Record],
    cache: Path | None,
    max_pixels: int,
    show_progress: bool = True,
) -> int:
    """Give each record without a ``phash`` its hash: from ``cache`` (a folder: one CSV per
    dataset root, keyed by path, size and modification time, shared by processes under a lock)
    or computed and added to it. Returns how many were computed. The dataset's own files are
    not touched."""
    todo = [r for r in records if not r.phash]
    if not todo:
        return 0
    table = (
        cache / f"{hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]}.csv"
        if cache
        else None
    )
    known = _read_cache(table) if table else {}
    computed: dict[tuple[str, int, int], str] = {}
    for r in progress(todo, desc="perceptual hashes", unit="photo", disable=not show_progress):
        key = _file_key(root, r.path)
        if key is None:
            continue
        r.phash = known.get(key) or hash_file(root, r.path, max_pixels)
        if key not in known and r.phash:
            computed[key] = r.phash
    if table and computed:
        table.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(table) + ".lock"):
            merged = {**_read_cache(table), **computed}
            part = table.with_name(f"{table.name}.{os.getpid()}.part")
            with part.open("w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(["path", "size", "mtime_ns", "phash"])
                w.writerows([*key, value] for key, value in merged.items())
            os.replace(part, table)
    return len(computed)


def _file_key(root: Path, relative: str) -> tuple[str, int, int] | None:
    try:
        st = (root / relative).stat()
    except OSError:
        return None
    return relative, st.st_size, st.st_mtime_ns


def _read_cache(table: Path) -> dict[tuple[str, int, int], str]:
    """A cache table as ``{(path, size, mtime_ns): phash}``; a damaged one counts as empty
    (it is only a cache: the hashes are made again)."""
    if not table.is_file():
        return {}
    try:
        with table.open(newline="", encoding="utf-8") as f:
            return {
                (row["path"], int(row["size"]), int(row["mtime_ns"])): row["phash"]
                for row in csv.DictReader(f)
                if _HEX16.fullmatch(row.get("phash") or "")
            }
    except (OSError, ValueError, KeyError, TypeError, csv.Error, UnicodeDecodeError):
        return {}


def parse_hashes(texts: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """``(values, valid)``: each 16-hex-digit hash as a ``uint64`` (0 where missing or
    malformed, with ``valid`` False)."""
    values = np.zeros(len(texts), dtype=np.uint64)
    valid = np.zeros(len(texts), dtype=bool)
    for i, text in enumerate(texts):
        if text and _HEX16.fullmatch(text):
            values[i] = np.uint64(int(text, 16))
            valid[i] = True
    return values, valid


def _flips(width: int, radius: int) -> np.ndarray:
    """Every ``width``-bit mask with at most ``radius`` bits set."""
    masks = [0]
    for r in range(1, radius + 1):
        masks += [sum(1 << b for b in bits) for bits in combinations(range(width), r)]
    return np.array(masks, dtype=np.uint64)


def near_pairs(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """Index pairs ``(i, j)``, ``i < j``, of hashes at most ``max_distance`` bits apart, as an
    ``(P, 2)`` array. Memory and time grow with the number of hashes and of candidate pairs, not
    with its square; pass distinct hashes (a thousand copies of one photo are a million pairs:
    :func:`clusters` links exact copies itself)."""
    if not 0 <= max_distance < HASH_BITS:
        raise ValueError(f"max_distance={max_distance}: must be in [0, {HASH_BITS})")
    hashes = np.asarray(hashes, dtype=np.uint64)
    found: list[np.ndarray] = [np.zeros((0, 2), np.int64)]
    radius = max_distance // len(CHUNKS)
    for shift, width in CHUNKS:
        keys = (hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        order = np.argsort(keys, kind="stable")
        table = keys[order]
        for flip in _flips(width, radius):
            probe = keys ^ flip
            lo = np.searchsorted(table, probe, "left")
            counts = np.searchsorted(table, probe, "right") - lo
            if not counts.any():
                continue
            left = np.repeat(np.arange(len(hashes)), counts)
            starts = np.repeat(lo - (np.cumsum(counts) - counts), counts)
            right = order[starts + np.arange(counts.sum())]
            keep = left < right
            left, right = left[keep], right[keep]
            near = np.bitwise_count(hashes[left] ^ hashes[right]) <= max_distance
            found.append(np.stack([left[near], right[near]], 1))  # verified: few are kept
    return np.unique(np.concatenate(found), axis=0)


def clusters(hashes: Sequence[str | None], max_distance: int) -> np.ndarray:
    """A cluster label per photo: photos linked by a chain of near pairs (exact copies
    included) share one; a photo with no near copy, or no hash, is its own. A label is the
    smallest index among its members."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    values, valid = parse_hashes(hashes)
    index = np.flatnonzero(valid)
    labels = np.arange(len(hashes))
    if not len(index):
        return labels
    unique, inverse = np.unique(values[index], return_inverse=True)
    pairs = near_pairs(unique, max_distance)
    n = len(unique)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    smallest = np.full(component.max() + 1, len(hashes))
    np.minimum.at(smallest, component[inverse], index)
    labels[index] = smallest[component[inverse]]
    return labels


def cluster_members(paths: Sequence[str], labels: Sequence[int]) -> list[list[str]]:
    """The clusters of more than one photo, as their paths (largest first)."""
    members: dict[int, list[str]] = {}
    for path, label in zip(paths, labels):
        members.setdefault(label, []).append(path)
    return sorted((m for m in members.values() if len(m) > 1), key=lambda m: (-len(m), m[0]))
