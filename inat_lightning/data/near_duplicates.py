"""Near-duplicate photos: the same shot uploaded twice, re-encoded, resized, cropped a little or
brightened, under another file name or on another observation. Split by observation, such
copies still land in train and test and inflate the test score; here they are found and kept
together.

Two signals, both made once per photo from one 32×32 grey thumbnail (at download, from the
bytes in hand, or when a folder is indexed) and stored in the manifest:

- ``phash`` (:func:`photo_hash`): a 64-bit perceptual hash (``imagehash.phash``: the signs of the
  thumbnail's 8×8 lowest DCT frequencies against their median) as 16 hex digits.
  :func:`near_pairs` finds every pair within ``max_distance`` bits, sub-quadratically:
  multi-index hashing (Norouzi et al.) — the 64 bits cut into 3 chunks, at least one of which
  differs by at most ``max_distance // 3`` bits between any two near hashes; candidates come
  from sorted chunk tables (each probe a binary search) and are verified on all 64 bits.
- ``lowfreq`` (:func:`photo_lowfreq`): for a smooth photo (sky, water, a plain background) most
  of those 64 coefficients are close to their median and a copy's hash flips 6-28 of its bits.
  The second signal keeps what the signs throw away: the thumbnail's mean, its contrast and its
  15 lowest DCT coefficients, 34 hex digits. :func:`smooth_pairs` finds the smooth photos (a
  contrast under :data:`SMOOTH_STD`) whose coefficients point the same way (cosine at least
  :data:`SMOOTH_COSINE`) with a mean and contrast within :data:`SMOOTH_TONE` of each other:
  candidates from a k-d tree (``scipy.spatial.cKDTree``), each verified.

Low frequencies cannot tell a copy from another photo of the same plain sky a few % brighter
(tiles of one sky match as closely as a brightened copy). Where the photos are at hand,
:func:`confirmed` checks each smooth pair on their pixels: a copy keeps the original's grain
(:func:`photo_grain`: what the thumbnail has beyond a blur of it), another photo of the same sky
has its own; a copy re-encoded so hard that its grain is gone keeps the original's tones.

:func:`clusters` joins both kinds of pair into connected components (a chain of copies is one
cluster). Measured in ``bench/bench_near_duplicates.py`` (docs/benchmarks.md): on tiles of real
photos the tests use every mild copy found and, with the pixels checked, 0.3 % of distinct
photos joined (on held-out photos: copies of nearly flat ones missed, 0.5 % joined).
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
from filelock import FileLock
from PIL import Image

from inat_lightning.atomic import replacing
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
#: the low-frequency signal: a photo whose thumbnail's standard deviation is under this is
#: smooth (copies of such photos hashed 6-28 bits apart; textured ones 0-5)
SMOOTH_STD = 24.0
#: the least cosine between two smooth photos' 15 lowest DCT coefficients to join them (copies:
#: 0.995-1.0; JPEG noise on the flattest photos, a contrast of 2-4, lowers it to 0.98)
SMOOTH_COSINE = 0.995
#: the largest ratio of two smooth photos' mean grey levels, and of their contrasts, to join
#: them (a copy brightened by 10 % stays within; tiles of one sky a few % apart do not leave it)
SMOOTH_TONE = 1.15
#: the most candidates a smooth photo may have for its low frequencies to count (copies come
#: in few; a crowd of plain skies alike is not evidence of copying)
SMOOTH_CROWD = 8
#: the width (thumbnail pixels) of the blur whose residual is a photo's grain
GRAIN_SIGMA = 1.5
#: the least correlation of two smooth photos' grain that confirms them as copies (copies that
#: keep a grain: 0.15 and up; tiles of one sky or one wall, distinct photos: 0.07 at most)
GRAIN_AGREEMENT = 0.12
_BLOCK = 1 << 18  # candidate pairs verified at a time (bounds the memory)
_CANDIDATES = 32  # nearest candidates per smooth photo on its lowest frequencies
_LOWEST = [0, 1, 3, 4, 7]  # frequencies (0, 1), (0, 2), (1, 0), (1, 1), (2, 0) of the 15
LOWFREQ_SIDE = 4  # the 4×4 lowest DCT frequencies, less the mean: 15 coefficients
_LOWFREQ = re.compile(r"[0-9a-f]{34}")
_TONE_STEPS = 32  # mean and contrast stored as round(32 * log2(1 + x)): 2 % steps


@dataclass(frozen=True)
class Signature:
    """A photo's two near-duplicate signals (``""`` each for a photo without structure)."""

    phash: str = ""
    lowfreq: str = ""


def _thumbnail(image: Image.Image) -> np.ndarray | None:
    """The photo's 32×32 grey thumbnail (``None`` when nearly flat: every flat photo would
    match every other). An image not yet decoded is decoded at reduced size where the format
    allows (JPEG's DCT scaling), so this costs a fraction of a full decode."""
    image.draft("RGB", (128, 128))
    grey = _grey(image).resize((32, 32), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.float64)
    return pixels if float(pixels.std()) >= MIN_STRUCTURE else None


def _grey(image: Image.Image) -> Image.Image:
    """The photo in 8-bit grey; a 16- or 32-bit one scaled, not clipped at 255 (a 16-bit PNG
    would turn white)."""
    if image.mode.startswith("I"):
        wide = image.convert("F")  # 4 bytes a pixel, not numpy's 8
        scale = 257.0 if wide.getextrema()[1] > 255 else 1.0
        return wide.point(lambda v: v / scale).convert("L")
    return image.convert("L")


def _phash(pixels: np.ndarray) -> str:
    import imagehash  # only where hashes are made

    return str(imagehash.phash(Image.fromarray(pixels.astype(np.uint8)), hash_size=8))


def _lowfreq(pixels: np.ndarray) -> str:
    """Mean and contrast (one byte each, log scale) and the 15 lowest DCT coefficients scaled to
    the largest (one signed byte each), as 34 hex digits; ``""`` when they are all zero."""
    from scipy.fft import dctn

    side = LOWFREQ_SIDE
    coefficients = dctn(pixels, norm="ortho")[:side, :side].ravel()[1:]
    largest = float(np.abs(coefficients).max())
    if largest < 1e-6:
        return ""
    quantised = np.round(coefficients / largest * 127).astype(np.int8)
    tone = [min(255, round(_TONE_STEPS * math.log2(1 + x))) for x in (pixels.mean(), pixels.std())]
    return bytes(tone).hex() + quantised.tobytes().hex()


def photo_signature(image: Image.Image) -> Signature:
    """Both near-duplicate signals of a photo, from one thumbnail."""
    pixels = _thumbnail(image)
    if pixels is None:
        return Signature()
    return Signature(_phash(pixels), _lowfreq(pixels))


def photo_grain(image: Image.Image) -> np.ndarray | None:
    """The photo's grain: its 32×32 thumbnail less a Gaussian blur of it (:data:`GRAIN_SIGMA`),
    mean-free, as a unit vector of 1,024 (``None`` for a photo without structure). Noise,
    texture and faint detail at a fixed place in the frame: a copy keeps it, a photo of the same
    scene moved or taken again does not."""
    from scipy.ndimage import gaussian_filter

    pixels = _thumbnail(image)
    if pixels is None:
        return None
    grain = pixels - gaussian_filter(pixels, GRAIN_SIGMA, mode="nearest")
    grain -= grain.mean()
    norm = float(np.linalg.norm(grain))
    return (grain.ravel() / norm).astype(np.float32) if norm > 1e-9 else None  # 4 KB a photo


def photo_hash(image: Image.Image) -> str:
    """The photo's 64-bit perceptual hash, 16 hex digits; ``""`` for a photo without structure
    to compare (a flat or nearly flat thumbnail)."""
    return photo_signature(image).phash


def _of_file(
    root: Path, relative: str, max_pixels: int, make: Callable[[Image.Image], object]
) -> object | None:
    """``make`` of a photo inside ``root`` (resolved; the photo checked as training reads it);
    ``None`` when it cannot be read (the dataset reports and skips such photos)."""
    from inat_lightning.data.dataset import open_checked

    try:
        with Image.open(open_checked(root, relative, max_pixels)) as image:
            return make(image)
    except ImportError:  # a broken install is not a broken photo
        raise
    except Exception:  # noqa: BLE001 - any failure to decode (Pillow raises SyntaxError too)
        return None


def signature_of_file(root: Path, relative: str, max_pixels: int) -> Signature:
    """The signature of a photo inside ``root`` (resolved); empty when it cannot be read."""
    return _of_file(root, relative, max_pixels, photo_signature) or Signature()


class GrainsOfFiles:
    """``grains(i)``: the grain of the photo ``paths[i]`` inside ``root``, read when first asked
    for (only the photos of smooth pairs are), ``None`` when it cannot be read."""

    def __init__(self, root: Path, paths: Sequence[str], max_pixels: int) -> None:
        self.root, self.paths, self.max_pixels = Path(root).resolve(), paths, max_pixels
        self.known: dict[int, np.ndarray | None] = {}

    def __call__(self, i: int) -> np.ndarray | None:
        """Photo ``i``'s grain, read once."""
        if i not in self.known:
            self.known[i] = _of_file(self.root, self.paths[i], self.max_pixels, photo_grain)
        return self.known[i]


def fill_hashes(
    root: Path,
    records: Sequence[Record],
    cache: Path | None,
    max_pixels: int,
    show_progress: bool = True,
    need_lowfreq: bool = True,
) -> int:
    """Give each record without a ``phash`` (or, with ``need_lowfreq``, a ``lowfreq``) its
    signals: from ``cache`` (a folder: one CSV per dataset root, keyed by path, size and
    modification time, shared by processes under a lock) or computed and added to it. A signal
    the record has is kept.
    Returns how many photos were read. The dataset's own files are not touched."""
    todo = [r for r in records if not r.phash or (need_lowfreq and not r.lowfreq)]
    if not todo:
        return 0
    root = root.resolve()  # a relative root, or one reached through a link
    table = (
        cache / f"{hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]}.csv"
        if cache
        else None
    )
    known = _read_cache(table) if table else {}
    computed: dict[tuple[str, int, int], Signature] = {}
    for r in progress(todo, desc="perceptual hashes", unit="photo", disable=not show_progress):
        key = _file_key(root, r.path)
        if key is None:
            continue
        found = known.get(key) or signature_of_file(root, r.path, max_pixels)
        r.phash, r.lowfreq = r.phash or found.phash, r.lowfreq or found.lowfreq
        if key not in known and found.phash:
            computed[key] = found
    if table and computed:
        table.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(table) + ".lock"):
            merged = {**_read_cache(table), **computed}
            with replacing(table) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(["path", "size", "mtime_ns", "phash", "lowfreq"])
                w.writerows([*key, s.phash, s.lowfreq] for key, s in merged.items())
    return len(computed)


def _file_key(root: Path, relative: str) -> tuple[str, int, int] | None:
    try:
        st = (root / relative).stat()
    except OSError:
        return None
    return relative, st.st_size, st.st_mtime_ns


def _read_cache(table: Path) -> dict[tuple[str, int, int], Signature]:
    """A cache table as ``{(path, size, mtime_ns): signature}``; a damaged one counts as empty
    and a row of an older table (no ``lowfreq``) as missing: it is only a cache, the signals are
    made again."""
    if not table.is_file():
        return {}
    try:
        with table.open(newline="", encoding="utf-8") as f:
            return {
                (row["path"], int(row["size"]), int(row["mtime_ns"])): Signature(
                    row["phash"], row["lowfreq"]
                )
                for row in csv.DictReader(f)
                if _HEX16.fullmatch(row.get("phash") or "") and _cached_lowfreq(row.get("lowfreq"))
            }
    except (OSError, ValueError, KeyError, TypeError, csv.Error, UnicodeDecodeError):
        return {}


def _cached_lowfreq(text: str | None) -> bool:
    """A cache cell holds a ``lowfreq`` (or none for a photo without one); a table from before
    the column has ``None`` here."""
    return text is not None and (text == "" or bool(_LOWFREQ.fullmatch(text)))


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
            for a, b in _blocks(counts, _BLOCK):  # bounded memory, even for crafted hashes
                some = counts[a:b]
                left = np.repeat(np.arange(a, b), some)
                starts = np.repeat(lo[a:b] - (np.cumsum(some) - some), some)
                right = order[starts + np.arange(some.sum())]
                keep = left < right
                left, right = left[keep], right[keep]
                near = np.bitwise_count(hashes[left] ^ hashes[right]) <= max_distance
                found.append(np.stack([left[near], right[near]], 1))  # verified: few are kept
    return np.unique(np.concatenate(found), axis=0)


def _blocks(counts: np.ndarray, size: int) -> list[tuple[int, int]]:
    """Ranges ``[a, b)`` of hashes whose candidates (``counts``) total about ``size`` at most
    (one hash at least): one range for real hashes, many where a crafted manifest shares a
    chunk among thousands of hashes (every pair a candidate)."""
    total = np.cumsum(counts)
    if not len(total) or total[-1] == 0:
        return []
    ranges, start = [], 0
    while start < len(counts):
        base = int(total[start - 1]) if start else 0
        stop = max(int(np.searchsorted(total, base + size, "right")), start + 1)
        ranges.append((start, stop))
        start = stop
    return ranges


def _tone_steps(text: str) -> bytes:
    """A ``lowfreq``'s mean and contrast as stored: its first two bytes, in steps of
    1/:data:`_TONE_STEPS` of log2 (see :func:`_lowfreq`)."""
    return bytes.fromhex(text[:4])


def parse_lowfreq(texts: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(tone, direction, valid)``: each photo's log2 mean and contrast ``(N, 2)``, its 15
    coefficients as a unit vector ``(N, 15)``, and whether it has a well-formed ``lowfreq``."""
    size = LOWFREQ_SIDE**2 - 1
    raw = np.zeros((len(texts), 2 + size), dtype=np.uint8)
    valid = np.zeros(len(texts), dtype=bool)
    for i, text in enumerate(texts):
        if text and _LOWFREQ.fullmatch(text):
            raw[i] = np.frombuffer(bytes.fromhex(text), dtype=np.uint8)
            valid[i] = True
    tone = np.log2(np.maximum(np.exp2(raw[:, :2] / _TONE_STEPS) - 1, 1e-3))
    direction = raw[:, 2:].view(np.int8).astype(np.float64)
    norm = np.linalg.norm(direction, axis=1, keepdims=True)
    valid &= norm[:, 0] > 0
    return tone, direction / np.maximum(norm, 1e-12), valid


def smooth_pairs(
    texts: Sequence[str | None],
    cosine: float = SMOOTH_COSINE,
    tone: float = SMOOTH_TONE,
    max_std: float = SMOOTH_STD,
    crowd: int = SMOOTH_CROWD,
) -> np.ndarray:
    """Index pairs ``(i, j)``, ``i < j``, of smooth photos (contrast under ``max_std``) whose
    low frequencies point the same way (cosine at least ``cosine``) with means and contrasts at
    most ``tone`` times apart, as an ``(P, 2)`` array.

    Candidates: a k-d tree over the 5 lowest frequencies and the 2 scaled log tones (few
    dimensions, where a tree prunes well), each photo's :data:`_CANDIDATES` nearest in the max
    norm within the box that holds every pair within both limits; each candidate then verified
    on all 15. A photo with more than ``crowd`` verified matches, or whose candidates fill the
    list (a plain sky among thousands alike), is left to its hash: copies come in few,
    look-alikes in crowds, and a crowd would be chained into one huge cluster."""
    levels, direction, valid = parse_lowfreq(texts)
    pool = np.flatnonzero(valid & (levels[:, 1] < math.log2(max_std)))
    if len(pool) < 2:
        return np.zeros((0, 2), np.int64)
    from scipy.spatial import cKDTree

    radius = math.sqrt(2 * (1 - cosine))  # a unit-vector distance within the cosine
    step = math.log2(tone)
    coarse = np.concatenate([direction[pool][:, _LOWEST], levels[pool] * (radius / step)], 1)
    k = min(_CANDIDATES + 1, len(pool))
    bound = radius + 1e-9  # the tree's bound is strict: cosine 1 still finds equal photos
    distances, found = cKDTree(coarse).query(coarse, k, distance_upper_bound=bound, p=np.inf)
    full = np.isfinite(distances[:, -1]) & (k == _CANDIDATES + 1)  # more may lie beyond
    rows = np.repeat(np.arange(len(pool)), k).reshape(len(pool), k)
    keep = np.isfinite(distances) & (found != rows) & ~full[:, None]
    keep[keep] = ~full[found[keep]]  # a crowded photo's pairs are dropped: not verified
    i, j = pool[rows[keep]], pool[found[keep]]
    near = np.concatenate(
        [
            _alike(direction, levels, i[s : s + _BLOCK], j[s : s + _BLOCK], cosine, step)
            for s in range(0, len(i), _BLOCK)
        ]
        or [np.zeros(0, bool)]
    )
    i, j = i[near], j[near]
    crowded = np.bincount(i, minlength=len(valid)) > crowd
    alone = ~crowded[i] & ~crowded[j]
    pairs = np.sort(np.stack([i[alone], j[alone]], axis=1), axis=1)
    return np.unique(pairs, axis=0)


def _alike(
    direction: np.ndarray, levels: np.ndarray, i: np.ndarray, j: np.ndarray, cosine, step
) -> np.ndarray:
    """Which candidate pairs ``(i[k], j[k])`` are within the cosine and the tone step."""
    same_way = np.einsum("ij,ij->i", direction[i], direction[j]) >= cosine - 1e-12
    return same_way & (np.abs(levels[i] - levels[j]) <= step + 1e-9).all(axis=1)


def confirmed(
    pairs: np.ndarray, texts: Sequence[str | None], grain: Callable[[int], np.ndarray | None]
) -> np.ndarray:
    """Which smooth pairs ``(P, 2)`` (of photos with ``lowfreq`` ``texts``) their pixels confirm
    as copies: grain correlated at least :data:`GRAIN_AGREEMENT`, or tones the same (means and
    contrasts one stored step apart at most, 2 %, up to 4 % with rounding: JPEG at quality 50
    erases the grain of the flattest photos, not their tones). A pair with a photo that cannot
    be read stands on its low frequencies. The pairs are :func:`smooth_pairs`' (their
    ``texts`` well-formed)."""
    keep = np.ones(len(pairs), dtype=bool)
    for k, (i, j) in enumerate(pairs.tolist()):
        if all(abs(x - y) <= 1 for x, y in zip(_tone_steps(texts[i]), _tone_steps(texts[j]))):
            continue
        mine, theirs = grain(i), grain(j)
        if mine is not None and theirs is not None:
            keep[k] = float(mine @ theirs) >= GRAIN_AGREEMENT
    return keep


def clusters(
    hashes: Sequence[str | None],
    max_distance: int,
    lowfreq: Sequence[str | None] | None = None,
    cosine: float | None = SMOOTH_COSINE,
    grain: Callable[[int], np.ndarray | None] | None = None,
) -> np.ndarray:
    """A cluster label per photo: photos linked by a chain of near pairs (hashes within
    ``max_distance`` bits, exact copies, and smooth photos alike in ``lowfreq`` when given,
    to ``cosine``, and :func:`confirmed` by their ``grain`` when given: ``grain(i)`` is photo
    ``i``'s) share one; a photo with no near copy, or no signal, is its own. A label is the
    smallest index among its members."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(hashes)
    if not n:
        return np.zeros(0, np.int64)
    values, valid = parse_hashes(hashes)
    index = np.flatnonzero(valid)
    unique, first, inverse = np.unique(values[index], return_index=True, return_inverse=True)
    representative = index[first]  # one photo per distinct hash
    edges = [
        np.stack([index, representative[inverse]], axis=1),  # exact copies
        representative[near_pairs(unique, max_distance)],
    ]
    if lowfreq is not None and cosine is not None:
        smooth = smooth_pairs(lowfreq, cosine)
        edges.append(smooth if grain is None else smooth[confirmed(smooth, lowfreq, grain)])
    pairs = np.concatenate(edges).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    smallest = np.full(component.max() + 1, n)
    np.minimum.at(smallest, component, np.arange(n))
    return smallest[component]


def cluster_members(paths: Sequence[str], labels: Sequence[int]) -> list[list[str]]:
    """The clusters of more than one photo, as their paths (largest first)."""
    members: dict[int, list[str]] = {}
    for path, label in zip(paths, labels):
        members.setdefault(label, []).append(path)
    return sorted((m for m in members.values() if len(m) > 1), key=lambda m: (-len(m), m[0]))
