"""Near-duplicate photos (re-uploads, re-encoded, resized or brightened copies under other file
names) are found by perceptual hash and kept in one split, on real photos scikit-image ships."""

from __future__ import annotations

import csv
import io
from dataclasses import astuple
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from inat_lightning.data.card import card_text
from inat_lightning.data.datamodule import ImageFolderDataModule
from inat_lightning.data.manifest import Record, read_manifest, write_manifest
from inat_lightning.data.near_duplicates import (
    DEFAULT_DISTANCE,
    GRAIN_AGREEMENT,
    SMOOTH_COSINE,
    SMOOTH_CROWD,
    SMOOTH_STD,
    SMOOTH_TONE,
    GrainsOfFiles,
    clusters,
    confirmed,
    fill_hashes,
    near_pairs,
    photo_grain,
    photo_hash,
    photo_signature,
    smooth_pairs,
)
from inat_lightning.data.split import SplitSpec

skdata = pytest.importorskip("skimage.data")
# "rocket" is mostly smooth night sky: a copy of its tiles hashes 6-28 bits away (the second
# signal, ``lowfreq``, finds it)
PHOTOS = ("astronaut", "coffee", "chelsea", "coins", "hubble_deep_field", "immunohistochemistry")
SMOOTH = "rocket"


def real_photos(names: tuple[str, ...] = PHOTOS) -> dict[str, Image.Image]:
    return {name: Image.fromarray(getattr(skdata, name)()).convert("RGB") for name in names}


def copies(photo: Image.Image) -> dict[str, Image.Image]:
    """What a re-upload does to a photo."""
    jpeg = io.BytesIO()
    photo.save(jpeg, "JPEG", quality=50)
    smaller = photo.resize((photo.width * 2 // 3, photo.height * 2 // 3))
    return {
        "jpeg50": Image.open(io.BytesIO(jpeg.getvalue())),
        "two_thirds": smaller,
        "resized_back": smaller.resize(photo.size),
        "brighter": ImageEnhance.Brightness(photo).enhance(1.1),
        "all_three": ImageEnhance.Brightness(smaller).enhance(1.1),
    }


def distance(a: str, b: str) -> int:
    return int(bin(int(a, 16) ^ int(b, 16)).count("1"))


def test_copies_of_a_real_photo_hash_close_and_other_photos_far():
    photos = real_photos()
    hashes = {name: photo_hash(p.copy()) for name, p in photos.items()}
    for name, photo in photos.items():
        for how, copy in copies(photo).items():
            assert distance(photo_hash(copy), hashes[name]) <= DEFAULT_DISTANCE, (name, how)
    for a, b in combinations(hashes, 2):
        assert distance(hashes[a], hashes[b]) > 3 * DEFAULT_DISTANCE, (a, b)
    assert photo_hash(Image.new("RGB", (64, 64), (40, 90, 30))) == ""  # nothing to compare


def test_near_pairs_are_exactly_the_brute_force_pairs():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**62, 3000, dtype=np.uint64) * np.uint64(3)
    for k in range(60):  # planted neighbours 0-8 bits away
        flips = rng.choice(64, int(rng.integers(0, 9)), replace=False)
        hashes[2000 + k] = hashes[k] ^ np.uint64(sum(1 << int(b) for b in flips))
    hashes = np.unique(hashes)
    for d in (0, 3, DEFAULT_DISTANCE, 7):
        found = {tuple(p) for p in near_pairs(hashes, d).tolist()}
        bits = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
        brute = {(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(bits <= d, 1)))}
        assert found == brute and (len(brute) > 0 or d == 0), d


def test_clusters_follow_chains_and_exact_copies_and_leave_the_rest_alone():
    a = "0000000000000000"
    b = "000000000000000f"  # 4 bits from a
    c = "00000000000000ff"  # 4 bits from b, 8 from a: joined through b
    far = "ffffffff00000000"
    labels = clusters([a, far, c, b, "", "not a hash", far, a], DEFAULT_DISTANCE).tolist()
    assert labels == [0, 1, 0, 0, 4, 5, 1, 0]


@pytest.mark.parametrize(("column", "digits"), [("phash", 16), ("lowfreq", 34)])
def test_a_bad_signal_cell_is_an_error_naming_row_and_column(tmp_path, column, digits):
    record = Record("1", "1", "", "a", "a/1.jpg", **{column: "xyz"})
    write_manifest(tmp_path / "manifest.csv", [record])
    with pytest.raises(ValueError, match=rf"row 2, column {column}: 'xyz' is not {digits} hex"):
        read_manifest(tmp_path / "manifest.csv")


def test_copies_of_smooth_photos_are_found_by_their_low_frequencies():
    """Tiles of a night sky: a copy's hash is often more than the distance away; the low
    frequencies find every copy, and join no textured photo."""
    sky = tiles(real_photos((SMOOTH,))[SMOOTH])[:24]
    originals = [photo_signature(t.copy()) for t in sky]
    unstable = 0
    for i, tile in enumerate(sky):
        for how, copy in copies(tile).items():
            found = photo_signature(copy)
            unstable += distance(found.phash, originals[i].phash) > DEFAULT_DISTANCE
            pairs = smooth_pairs([originals[i].lowfreq, found.lowfreq]).tolist()
            assert pairs == [[0, 1]], (i, how)
    assert unstable >= 10, unstable  # what the hash alone missed
    textured = [photo_signature(p) for p in real_photos().values()]
    everything = [s.lowfreq for s in originals + textured]
    assert all(i < len(sky) and j < len(sky) for i, j in smooth_pairs(everything).tolist())
    flat = photo_signature(Image.new("RGB", (64, 64), (40, 90, 30)))
    assert flat.phash == flat.lowfreq == ""  # nothing to compare


def lowfreq_text(mean: float, std: float, direction: np.ndarray) -> str:
    """A ``lowfreq`` cell: log-scaled mean and contrast, 15 signed bytes."""
    tone = [round(32 * np.log2(1 + x)) for x in (mean, std)]
    return bytes(tone).hex() + direction.astype(np.int8).tobytes().hex()


def test_smooth_pairs_are_exactly_the_brute_force_pairs():
    rng = np.random.default_rng(0)
    n = 600
    means, stds = rng.uniform(20, 230, n), rng.uniform(2, 40, n)
    directions = rng.integers(-127, 128, (n, 15))
    for k in range(200):  # planted neighbours: nearly the same direction and tone, or not
        j = n - 1 - k
        directions[j] = np.clip(directions[k] + rng.integers(-4, 5, 15), -127, 127)
        means[j] = min(250.0, means[k] * rng.uniform(0.8, 1.25))
        stds[j] = stds[k] * rng.uniform(0.8, 1.25)
    texts = [lowfreq_text(m, s, d) for m, s, d in zip(means, stds, directions)]
    # the oracle reads the cells back on its own
    raw = np.array([list(bytes.fromhex(t)) for t in texts])
    tone = np.log2(2 ** (raw[:, :2] / 32) - 1)
    unit = raw[:, 2:].astype(np.int8).astype(float)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    close = (unit @ unit.T >= SMOOTH_COSINE) & (tone[:, 1] < np.log2(SMOOTH_STD))[:, None]
    close &= (tone[:, 1] < np.log2(SMOOTH_STD))[None, :]
    for c in range(2):
        close &= np.abs(tone[:, None, c] - tone[None, :, c]) <= np.log2(SMOOTH_TONE) + 1e-9
    brute = {(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(close, 1)))}
    found = {tuple(p) for p in smooth_pairs(texts).tolist()}
    assert found == brute and 20 < len(brute) < 200, len(brute)


def test_clusters_join_hash_pairs_and_smooth_pairs():
    sky = lowfreq_text(50, 5, np.arange(15) - 7)
    brighter = lowfreq_text(55, 5.5, np.arange(15) - 7)
    other_sky = lowfreq_text(50, 5, 7 - np.arange(15))  # another shape
    hashes = ["0000000000000000", "ffffffff00000000", "00000000ffffffff", "000000000000000f"]
    lowfreq = [sky, "", brighter, other_sky]
    assert clusters(hashes, DEFAULT_DISTANCE, lowfreq).tolist() == [0, 1, 0, 0]
    assert clusters(hashes, DEFAULT_DISTANCE).tolist() == [0, 1, 2, 0]
    assert clusters(hashes, DEFAULT_DISTANCE, [sky, "", other_sky, ""]).tolist() == [0, 1, 2, 0]
    assert clusters([], DEFAULT_DISTANCE, []).tolist() == []


def test_the_grain_confirms_a_smooth_pair_or_its_tones_do():
    """A smooth pair stands when the grain agrees, when the tones are the same (a hard
    re-encoding erases the grain, not the tones) or when a photo cannot be read; otherwise
    it falls."""
    rng = np.random.default_rng(0)
    grains = [g / np.linalg.norm(g) for g in rng.normal(size=(4, 1024))]
    near = grains[0] + 0.5 * grains[1]
    grains.append(near / np.linalg.norm(near))  # correlates 0.89 with grains[0]
    assert abs(grains[0] @ grains[2]) < GRAIN_AGREEMENT  # independent grains
    shape = np.arange(15) - 7
    sky = lowfreq_text(50, 5, shape)
    brighter = lowfreq_text(54, 5, shape)
    texts = [sky, brighter, lowfreq_text(51.5, 5.2, shape), brighter, brighter]
    steps = [np.frombuffer(bytes.fromhex(t[:4]), np.uint8).astype(int) for t in texts[:3]]
    assert (abs(steps[2] - steps[0]) == 1).all() and abs(steps[1] - steps[0])[0] > 1
    pairs = np.array([[0, 1], [0, 2], [0, 4], [0, 3]])
    grain = {0: grains[0], 1: grains[2], 2: grains[2], 3: None, 4: grains[4]}.get
    # grains apart; tones within a step; grain alike; photo 3 unreadable
    assert confirmed(pairs, texts, grain).tolist() == [False, True, True, True]
    assert confirmed(np.zeros((0, 2), np.int64), texts, grain).tolist() == []
    hashes = ["0000000000000000", "ffffffff00000000", "00000000ffffffff", "", "0f0f0f0f0f0f0f0f"]
    assert clusters(hashes, DEFAULT_DISTANCE, texts[:2] + ["", "", ""]).tolist() == [0, 0, 2, 3, 4]
    checked = clusters(hashes, DEFAULT_DISTANCE, texts[:2] + ["", "", ""], grain=grain)
    assert checked.tolist() == [0, 1, 2, 3, 4]


def test_tiles_of_one_sky_are_told_from_copies_by_their_grain():
    """Tiles of rocket's sky a few % apart in brightness match in their low frequencies as
    closely as a brightened copy; their grain tells them apart, and every copy keeps it (or
    its tones)."""
    sky = real_photos((SMOOTH,))[SMOOTH]
    row = [sky.crop((x, 0, x + 96, 96)) for x in range(0, sky.width - 95, 48)]
    texts = [photo_signature(t.copy()).lowfreq for t in row]
    look_alike = smooth_pairs(texts)
    assert len(look_alike) >= 3, look_alike  # distinct photos the low frequencies join
    grains = [photo_grain(t.copy()) for t in row]
    assert not confirmed(look_alike, texts, grains.__getitem__).any()
    for tile in row:
        for how, copy in copies(tile).items():
            pair = [photo_signature(tile.copy()).lowfreq, photo_signature(copy).lowfreq]
            if len(smooth_pairs(pair)):
                both = [photo_grain(tile.copy()), photo_grain(copy)]
                assert confirmed(np.array([[0, 1]]), pair, both.__getitem__).all(), how


def test_the_dataset_card_checks_the_grain_of_the_photos_it_has(tmp_path):
    """The card written beside scraped photos counts the clusters the split will keep: a
    brightened copy with its tile, not the sky's other tiles; without the photos at hand the
    low frequencies alone join those too."""
    root = tmp_path / "photos"
    sky = real_photos((SMOOTH,))[SMOOTH]
    (root / "a").mkdir(parents=True)
    made = {f"t{x}": sky.crop((x, 0, x + 96, 96)) for x in range(0, sky.width - 95, 48)}
    made["copy"] = ImageEnhance.Brightness(made["t240"]).enhance(1.1)
    records = []
    for name, photo in made.items():
        photo.save(root / "a" / f"{name}.jpg", quality=90)
        with Image.open(root / "a" / f"{name}.jpg") as saved:
            signature = photo_signature(saved)
        phash, lowfreq = astuple(signature)
        records.append(Record(name, name, "", "a", f"a/{name}.jpg", phash=phash, lowfreq=lowfreq))
    checked = card_text(records, {}, root=root)
    assert "1 clusters of near-duplicate photos (2 photos" in checked, checked
    assert "- `a/t240.jpg`, `a/copy.jpg`" in checked
    unchecked = card_text(records, {})
    assert "1 clusters of near-duplicate photos (2 photos" not in unchecked


def test_grains_are_read_inside_the_root_however_it_is_named(tmp_path, monkeypatch):
    """A relative root, or one reached through a link, reads its photos (every photo of it once
    looked outside it); a broken photo, a path or a link leaving the root read as none."""
    root = tmp_path / "photos"
    (root / "a").mkdir(parents=True)
    tile = tiles(real_photos((SMOOTH,))[SMOOTH])[3]
    tile.save(root / "a" / "sky.jpg", quality=90)
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8 not a photo")
    tile.save(tmp_path / "outside.jpg", quality=90)
    (root / "a" / "link.jpg").symlink_to(tmp_path / "outside.jpg")
    (tmp_path / "linked").symlink_to(root)
    monkeypatch.chdir(tmp_path)
    paths = ["a/sky.jpg", "a/broken.jpg", "../outside.jpg", "a/link.jpg"]
    for named in (Path("photos"), tmp_path / "linked", Path("linked")):
        grains = GrainsOfFiles(named, paths, 10**8)
        assert [grains(i) is None for i in range(4)] == [False, True, True, True], named
        assert float(grains(0) @ grains(0)) == pytest.approx(1.0, abs=1e-5)
        records = [Record("1", "1", "", "a", "a/sky.jpg")]
        assert fill_hashes(named, records, None, 10**8, show_progress=False) == 1, named
        assert records[0].phash and records[0].lowfreq


def test_cosine_one_still_joins_identical_signals():
    sky = lowfreq_text(50, 5, np.arange(15) - 7)
    assert smooth_pairs([sky, sky], cosine=1.0).tolist() == [[0, 1]]


def test_a_crowd_of_smooth_look_alikes_is_left_to_the_hash():
    """Copies come in few: a photo whose low frequencies match more than SMOOTH_CROWD others
    (thousands of plain skies alike) is not joined by them, so no huge chained cluster."""
    sky = lowfreq_text(50, 5, np.arange(15) - 7)
    assert len(smooth_pairs([sky] * 3)) == 3
    assert len(smooth_pairs([sky] * (SMOOTH_CROWD + 1))) == SMOOTH_CROWD * (SMOOTH_CROWD + 1) // 2
    assert len(smooth_pairs([sky] * (SMOOTH_CROWD + 2))) == 0
    rng = np.random.default_rng(0)
    hashes = [f"{int(v):016x}" for v in rng.integers(0, 2**63, 40, dtype=np.uint64)]
    assert len(set(clusters(hashes, DEFAULT_DISTANCE).tolist())) == 40  # far apart
    assert len(set(clusters(hashes, DEFAULT_DISTANCE, [sky] * 40).tolist())) == 40


def test_hashes_are_computed_once_per_file_and_again_when_it_changes(tmp_path):
    photos = real_photos()
    root = tmp_path / "photos"
    (root / "a").mkdir(parents=True)
    for name, photo in photos.items():
        photo.resize((96, 96)).save(root / "a" / f"{name}.jpg")
    records = [Record(n, n, "", "a", f"a/{n}.jpg") for n in photos]
    cache = tmp_path / "cache"
    assert fill_hashes(root, records, cache, 10**8, show_progress=False) == len(photos)
    first = [r.phash for r in records]
    again = [Record(n, n, "", "a", f"a/{n}.jpg") for n in photos]
    assert fill_hashes(root, again, cache, 10**8, show_progress=False) == 0  # from the cache
    assert [r.phash for r in again] == first
    photos["coins"].rotate(90).resize((96, 96)).save(root / "a" / "coins.jpg")  # replaced
    changed = [Record(n, n, "", "a", f"a/{n}.jpg") for n in photos]
    assert fill_hashes(root, changed, cache, 10**8, show_progress=False) == 1
    assert changed[PHOTOS.index("coins")].phash != first[PHOTOS.index("coins")]


def test_a_cache_from_before_the_second_signal_is_made_again(tmp_path):
    """A hash cache without ``lowfreq`` (written before it existed) counts as missing; a
    manifest's own ``phash`` is kept while its missing ``lowfreq`` is made."""
    root = tmp_path / "photos"
    (root / "a").mkdir(parents=True)
    for name, photo in real_photos().items():
        photo.resize((96, 96)).save(root / "a" / f"{name}.jpg")
    records = [Record(n, n, "", "a", f"a/{n}.jpg") for n in PHOTOS]
    cache = tmp_path / "cache"
    fill_hashes(root, records, cache, 10**8, show_progress=False)
    (table,) = cache.glob("*.csv")
    with table.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(len(row["lowfreq"]) == 34 for row in rows)
    with table.open("w", newline="") as f:  # the table as an older version wrote it
        w = csv.DictWriter(f, ["path", "size", "mtime_ns", "phash"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    again = [Record(n, n, "", "a", f"a/{n}.jpg", phash="0123456789abcdef") for n in PHOTOS]
    assert fill_hashes(root, again, cache, 10**8, show_progress=False) == len(PHOTOS)
    assert [r.lowfreq for r in again] == [r.lowfreq for r in records]
    assert all(r.phash == "0123456789abcdef" for r in again)  # the manifest's, kept
    hashed = [Record(n, n, "", "a", f"a/{n}.jpg", phash="0123456789abcdef") for n in PHOTOS]
    assert fill_hashes(root, hashed, None, 10**8, False, need_lowfreq=False) == 0  # none read
    assert all(r.lowfreq == "" for r in hashed)


def tiles(photo: Image.Image, side: int = 96) -> list[Image.Image]:
    """Tiles of a photo (half-overlapping: a crop moved by half its side is another photo to
    a perceptual hash) with structure in them: distinct "photos"."""
    out = []
    for y in range(0, photo.height - side + 1, side // 2):
        for x in range(0, photo.width - side + 1, side // 2):
            tile = photo.crop((x, y, x + side, y + side))
            if photo_hash(tile.copy()):
                out.append(tile)
    return out


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, list[tuple[str, str]]]:
    """A plain ImageFolder (no manifest: one observation per file) of 4 classes of real photo
    tiles (one of them the smooth sky of "rocket"), with 50 planted copies of its photos under
    other names, 15 of them of rocket's tiles: ``(root, pairs)``."""
    root = tmp_path_factory.mktemp("planted") / "photos"
    photos = real_photos((*PHOTOS, SMOOTH))
    classes = {"Alpha": ["astronaut", "coffee"], "Beta": ["chelsea", "coins"]}
    classes["Gamma"] = ["hubble_deep_field", "immunohistochemistry"]
    classes["Delta"] = [SMOOTH]
    made: list[tuple[str, Image.Image]] = []
    for label, names in classes.items():
        (root / label).mkdir(parents=True)
        for name in names:
            for i, tile in enumerate(tiles(photos[name])[:40]):
                path = f"{label}/{name}_{i}.jpg"
                tile.save(root / path, quality=90)
                made.append((path, tile))
    rng = np.random.default_rng(1)
    smooth = [i for i, (path, _) in enumerate(made) if SMOOTH in path]
    textured = [i for i, (path, _) in enumerate(made) if SMOOTH not in path]
    chosen = [*rng.choice(smooth, 15, replace=False), *rng.choice(textured, 35, replace=False)]
    pairs = []
    for k, i in enumerate(chosen):
        path, tile = made[int(i)]
        kinds = list(copies(tile).values())
        copy = f"{path.split('/')[0]}/upload_{k:03d}.jpg"
        kinds[k % len(kinds)].convert("RGB").save(root / copy, quality=85)
        pairs.append((path, copy))
    return root, pairs


def split_of(root: Path, tmp_path: Path, **split) -> tuple[dict[str, str], list[list[str]]]:
    """Each photo's split, and the near-duplicate clusters found."""
    out = tmp_path / "splits.csv"
    dm = ImageFolderDataModule(
        root, image_size=32, num_workers=0, split=SplitSpec(**split), splits_out=out
    )
    dm.setup()
    with out.open(newline="") as f:
        return {row["path"]: row["split"] for row in csv.DictReader(f)}, dm.near_clusters


def test_planted_copies_never_straddle_the_split_by_default(planted, tmp_path):
    root, pairs = planted
    hashes = {p: photo_hash(Image.open(root / p)) for pair in pairs for p in pair}
    unstable = [(a, b) for a, b in pairs if distance(hashes[a], hashes[b]) > DEFAULT_DISTANCE]
    assert len(unstable) >= 3, unstable  # the hash alone would miss these: the smooth ones
    on, found = split_of(root, tmp_path)
    assert sum(on[a] != on[b] for a, b in pairs) == 0
    off, _ = split_of(root, tmp_path, near_duplicates=False)
    straddling = sum(off[a] != off[b] for a, b in pairs)
    assert straddling >= 10, straddling  # what the split did before (about half of them)
    hash_alone, _ = split_of(root, tmp_path, near_cosine=None)
    assert sum(hash_alone[a] != hash_alone[b] for a, b in unstable) >= 1  # the sky's copies
    # distinct photos joined with another distinct photo: at most 1 % (the sky's tiles, a few %
    # apart in brightness, match in low frequencies; their grain tells them apart)
    copies_made = {b for _, b in pairs}
    distinct = [p for p in on if p not in copies_made]
    joined = [p for c in found for p in c if p not in copies_made and len(set(c) - copies_made) > 1]
    assert all(p.startswith("Delta/") for p in joined), joined  # no textured photo
    assert len(joined) <= 0.01 * len(distinct), (len(joined), len(distinct), found)
    clustered = {p for c in found for p in c}  # everything else splits as before
    assert all(on[p] == off[p] for p in on if p not in clustered)


def test_the_summary_counts_the_clusters_and_the_picture_shows_them(planted, tmp_path):
    from inat_lightning.analysis.tiles import side_by_side

    root, pairs = planted
    dm = ImageFolderDataModule(root, image_size=32, num_workers=0)
    dm.setup()
    found = dm.near_duplicate_summary()
    of = {p: i for i, c in enumerate(dm.near_clusters) for p in c}
    assert all(of[a] == of[b] for a, b in pairs)
    assert found["clusters"] == len(dm.near_clusters) >= len({of[a] for a, _ in pairs})
    assert found["photos"] == sum(map(len, dm.near_clusters)) >= 2 * len(pairs)
    planted_photos = {p for pair in pairs for p in pair}
    others = [c for c in dm.near_clusters if not planted_photos & set(c)]
    assert all(p.startswith("Delta/") for c in others for p in c)  # only the smooth sky's
    assert found["test_photos_with_a_copy_in_train"] == 0
    assert all(set(c) <= set(dm.near_clusters[of[c[0]]]) for c in found["examples"])
    picture = Image.open(side_by_side(root, found["examples"], tmp_path / "nd.png", size=64))
    widest = max(len(c) for c in found["examples"])
    assert picture.width == widest * 64 and picture.height > 4 * 64  # 4 captioned rows
    off = ImageFolderDataModule(
        root, image_size=32, num_workers=0, split=SplitSpec(near_duplicates=False)
    )
    off.setup()
    assert off.near_duplicate_summary() is None


def test_a_relative_root_finds_the_same_clusters_and_draws_them(planted, tmp_path, monkeypatch):
    """``data.root=photos`` (relative, as the defaults are) hashes, checks and draws the photos
    as an absolute root does: each photo of it was once taken for one outside it."""
    from inat_lightning.analysis.tiles import side_by_side

    root, _ = planted
    absolute = ImageFolderDataModule(root, image_size=32)
    absolute.setup()
    monkeypatch.chdir(root.parent)
    relative = ImageFolderDataModule(Path(root.name), image_size=32)
    relative.setup()
    assert relative.near_clusters == absolute.near_clusters and relative.near_clusters
    examples = relative.near_duplicate_summary()["examples"]
    assert side_by_side(Path(root.name), examples, tmp_path / "nd.png", size=64) is not None


def broken_png(photo: Image.Image) -> bytes:
    """A PNG whose second data chunk's type is damaged (bit rot, a bad copy): the header reads,
    decoding raises ``SyntaxError`` (not ``OSError``) from Pillow."""
    buffer = io.BytesIO()
    photo.save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    second = data.find(b"IDAT", data.find(b"IDAT") + 4)
    assert second > 0  # Pillow writes a photo's pixels in several chunks
    data[second : second + 4] = b"\x00\x01\x02\x03"
    return bytes(data)


def test_a_photo_that_fails_to_decode_gets_no_signal_and_no_grain(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "rot.png").write_bytes(broken_png(real_photos()["astronaut"]))
    with Image.open(tmp_path / "a" / "rot.png") as image, pytest.raises(SyntaxError):
        image.convert("L")
    records = [Record("1", "1", "", "a", "a/rot.png")]
    assert fill_hashes(tmp_path, records, None, 10**8, show_progress=False) == 0
    assert records[0].phash == records[0].lowfreq == ""
    assert GrainsOfFiles(tmp_path, ["a/rot.png"], 10**8)(0) is None
    from inat_lightning.analysis.tiles import side_by_side

    assert side_by_side(tmp_path, [["a/rot.png"]], tmp_path / "nd.png") is None  # left out


def test_a_16_bit_photo_is_scaled_not_clipped():
    """A 16-bit grey PNG of a photo has the signals of its 8-bit copy (``convert("L")`` alone
    clips it to white)."""
    grey = np.asarray(real_photos()["coffee"].convert("L"))
    wide = Image.fromarray(grey.astype(np.uint16) * 257)
    buffer = io.BytesIO()
    wide.save(buffer, "PNG")
    with Image.open(buffer) as opened:
        assert opened.mode.startswith("I")
        sixteen = photo_signature(opened)
    eight = photo_signature(Image.fromarray(grey))
    assert distance(sixteen.phash, eight.phash) <= 1 and sixteen.lowfreq[:4] == eight.lowfreq[:4]


def test_hashes_crafted_to_share_a_chunk_are_paired_in_bounded_blocks(monkeypatch):
    """Thousands of distinct hashes with one chunk alike make every pair a candidate: they are
    verified a block at a time, and the pairs are still exactly the brute-force ones."""
    import inat_lightning.data.near_duplicates as nd

    rng = np.random.default_rng(0)
    values = rng.integers(0, 2**21, 600, dtype=np.uint64)  # the top 43 bits zero: chunks 2, 3
    values[300:] = values[:300] ^ np.uint64(1 << 5)  # 300 planted pairs, 1 bit apart
    values = np.unique(values)
    monkeypatch.setattr(nd, "_BLOCK", 1000)
    blocks = nd._blocks(np.full(len(values), len(values)), nd._BLOCK)
    assert len(blocks) > 100 and blocks[0] == (0, 1)  # each hash its own block here
    found = {tuple(p) for p in near_pairs(values, DEFAULT_DISTANCE).tolist()}
    brute = {
        (i, j)
        for i, j in combinations(range(len(values)), 2)
        if int(values[i] ^ values[j]).bit_count() <= DEFAULT_DISTANCE
    }
    assert found == brute and len(brute) >= 300


def test_one_placeholder_photo_everywhere_is_an_error_naming_the_split(tmp_path, caplog):
    """A manifest whose photos all carry one hash (a placeholder image, or a copied cell) puts
    every photo in one cluster: the split that comes out empty is named, with the cluster; a
    cluster of a large share of the photos is a warning."""
    photos = tiles(real_photos()["astronaut"])[:24]
    records = []
    for i, tile in enumerate(photos):
        label = "Alpha" if i % 2 else "Beta"
        (tmp_path / label).mkdir(exist_ok=True)
        tile.save(tmp_path / label / f"{i}.jpg", quality=90)
        records.append(Record(str(i), str(i), "", label, f"{label}/{i}.jpg", phash="0" * 16))
    write_manifest(tmp_path / "manifest.csv", records)
    dm = ImageFolderDataModule(tmp_path, image_size=32)
    with pytest.raises(ValueError, match=r"^data\.split: the .* empty: near-duplicate"):
        dm.setup()
    for r in records[12:]:  # half of the photos alike: warned, still split
        r.phash = ""
    write_manifest(tmp_path / "manifest.csv", records)
    dm = ImageFolderDataModule(tmp_path, image_size=32)
    with caplog.at_level("WARNING"):
        dm.setup()
    assert "one cluster holds 12 of 24 photos" in caplog.text
    assert sum(map(len, dm.records.values())) == 24


def test_a_hash_cache_that_is_a_file_is_refused_before_any_photo_is_read(planted, tmp_path):
    root, _ = planted
    (tmp_path / "cache").write_text("not a folder")
    with pytest.raises(ValueError, match=r"^hash_cache='.*cache': a file, not a folder$"):
        ImageFolderDataModule(root, image_size=32, hash_cache=tmp_path / "cache")


def test_a_split_emptied_by_a_pinning_file_names_the_file_not_the_clusters(planted, tmp_path):
    """A ``splits.csv`` made without a test split, pinned under ratios that want one: the
    error names the file (the near-duplicate clusters, there too, are not the cause)."""
    root, _ = planted
    pinned = tmp_path / "splits.csv"
    ImageFolderDataModule(
        root, image_size=32, split=SplitSpec(ratios=(0.8, 0.2, 0)), splits_out=pinned
    ).setup()
    dm = ImageFolderDataModule(root, image_size=32, split=SplitSpec(file=str(pinned)))
    with pytest.raises(ValueError) as error:
        dm.setup()
    assert str(error.value) == (
        f"data.split: the test split is empty (file={str(pinned)!r}, group_by=observation)"
    )
