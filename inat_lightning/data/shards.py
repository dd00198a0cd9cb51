"""Shards: a split's photos packed into a few large tar files, so that a store where every
object costs a round trip (S3, NFS) is read in a few requests per epoch, not one per photo.

Layout under the output (a folder or ``s3://bucket/prefix``)::

    shards.json                  the card: classes, photos per class and split, the source
                                 manifest's fingerprint, the split settings (written last)
    <split>/index.json           each shard (name, size, sha256) and each photo (shard, offset,
                                 size, sha256, its manifest row)
    <split>/shard-00000.tar      photos as downloaded (``<n>.jpg``) with their row
                                 (``<n>.json``): WebDataset's layout, readable by ``tar``

Everything read back is data, never code: JSON and photo bytes, each checked (names relative,
offsets inside their shard, every photo's bytes against its sha256), so a corrupt or truncated
shard is a :class:`ShardError` naming it, not a wrong photo.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from PIL import Image

from inat_lightning.data.dataset import DataError, ImageDataset, decode_bytes
from inat_lightning.data.manifest import DEFAULT_MAX_PIXELS, Record, check_relative, record_of
from inat_lightning.data.stores import LocalStore, Store, StoreError, check_name

FORMAT, VERSION = "inat-lightning-shards", 1
CARD = "shards.json"
#: shard files a process keeps open at most (an epoch in random order touches every shard)
OPEN_SHARDS = 64
SHA256 = re.compile(r"[0-9a-f]{64}")


class ShardError(DataError):
    """A shard (or its index) that is missing, truncated, corrupt or not a shard index: the
    message names it."""


@dataclass(frozen=True)
class Shard:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Photo:
    """Where one photo's bytes are: in shard number ``shard``, ``size`` bytes at ``offset``."""

    shard: int
    offset: int
    size: int
    sha256: str
    record: Record


def index_name(split: str) -> str:
    return f"{split}/index.json"


def row_of(record: Record) -> dict[str, str]:
    """A record as its manifest row, every cell as text (what :func:`record_of` reads)."""
    return {k: "" if v is None else str(v) for k, v in record.row().items()}


def _int(value: Any, where: str, low: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ShardError(f"{where}: {value!r} is not an integer >= {low}")
    return value


def _sha(value: Any, where: str) -> str:
    if not isinstance(value, str) or not SHA256.fullmatch(value):
        raise ShardError(f"{where}: {value!r} is not a sha256")
    return value


def parse_index(data: bytes, where: str, split: str) -> tuple[list[Shard], list[Photo]]:
    """A split's index, every value checked: shard names inside ``<split>/``, each photo inside
    its shard, its row read by the manifest's rules. Anything else is a :class:`ShardError`
    naming ``where``."""
    try:
        index = json.loads(data)
        shards = [
            Shard(check_name(s["name"]), _int(s["size"], where), _sha(s["sha256"], where))
            for s in index["shards"]
        ]
        photos = []
        for i, p in enumerate(index["photos"]):
            at = f"{where}: photo {i}"
            shard = _int(p["shard"], at)
            offset, size = _int(p["offset"], at), _int(p["size"], at)
            if shard >= len(shards) or offset + size > shards[shard].size:
                raise ShardError(f"{at}: bytes {offset}+{size} are outside its shard")
            if not isinstance(p["row"], dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in p["row"].items()
            ):
                raise ShardError(f"{at}: its row is not a mapping of text to text")
            record = record_of(p["row"], at)
            check_relative(record.path, at)
            photos.append(Photo(shard, offset, size, _sha(p["sha256"], at), record))
    except (ValueError, KeyError, TypeError) as e:  # JSON, a missing key, a bad cell
        raise ShardError(f"{where}: not a shard index ({type(e).__name__}: {e})") from None
    bad = [s.name for s in shards if not s.name.startswith(f"{split}/")]
    if bad:
        raise ShardError(f"{where}: shard {bad[0]!r} is not in {split}/")
    return shards, photos


def parse_card(data: bytes, where: str) -> dict[str, Any]:
    """The shard set's card, its format and shape checked."""
    try:
        card = json.loads(data)
        ok = card["format"] == FORMAT and card["version"] == VERSION
        classes, splits = card["classes"], card["splits"]
    except (ValueError, KeyError, TypeError) as e:
        raise ShardError(f"{where}: not a shard card ({type(e).__name__}: {e})") from None
    if not ok:
        raise ShardError(f"{where}: not a {FORMAT} v{VERSION} card")
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise ShardError(f"{where}: classes is not a list of names")
    if len(set(classes)) != len(classes):
        raise ShardError(f"{where}: a class is named twice")
    if not (isinstance(splits, dict) and all(isinstance(s, str) for s in splits)):
        raise ShardError(f"{where}: splits is not a mapping of split names")
    for split in splits:
        check_name(split)
    fingerprint = card.get("fingerprint")
    if not isinstance(fingerprint, dict):
        raise ShardError(f"{where}: fingerprint is not a mapping")
    _sha(fingerprint.get("records_sha256"), f"{where}: fingerprint.records_sha256")
    for key in ("near_duplicates", "lineages"):
        if card.get(key) is not None and not isinstance(card[key], dict):
            raise ShardError(f"{where}: {key} is not a mapping")
    examples = (card.get("near_duplicates") or {}).get("examples") or []
    if not (
        isinstance(examples, list)
        and all(isinstance(c, list) and all(isinstance(p, str) for p in c) for c in examples)
    ):
        raise ShardError(f"{where}: near_duplicates.examples is not a list of path lists")
    return card


def read_card(store: Store) -> dict[str, Any]:
    where = f"{store.url}/{CARD}"
    try:
        return parse_card(store.read(CARD), where)
    except StoreError as e:
        why = "not found" if e.code == "404" else (e.code or e.strerror or str(e))
        raise ShardError(f"{where}: no shard set here ({why})") from None


def read_index(store: Store, split: str) -> tuple[list[Shard], list[Photo]]:
    where = f"{store.url}/{index_name(split)}"
    try:
        data = store.read(index_name(split))
    except StoreError as e:
        raise ShardError(f"{where}: missing ({e.code or e.strerror or e})") from None
    return parse_index(data, where, split)


class ShardReader:
    """Reads photos out of one split's shards. A local store's shard is read where it lies; a
    remote one is fetched whole, once, into ``cache_dir`` (named by its sha256: shared by runs
    and processes, made under a lock, checked, then renamed into place). Each process keeps
    its shard files open: a few opens per epoch, not one per photo."""

    def __init__(self, store: Store, shards: Sequence[Shard], cache_dir: str | Path | None):
        self.store, self.shards = store, list(shards)
        if not isinstance(store, LocalStore) and cache_dir is None:
            raise ValueError(f"{store.url}: a remote shard set needs a cache_dir")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._files: OrderedDict[int, int] = OrderedDict()
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_files": OrderedDict()}  # descriptors stay with their process

    def local_path(self, n: int) -> Path:
        """Shard ``n`` on this machine: the store's own file, or the cached download."""
        shard = self.shards[n]
        if isinstance(self.store, LocalStore):
            path = self.store.path(shard.name)
            size = path.stat().st_size if path.is_file() else None
            if size != shard.size:
                found = "missing" if size is None else f"{size} bytes, the index says {shard.size}"
                raise ShardError(f"{path}: {found} (a truncated or replaced shard)")
            return path
        assert self.cache_dir is not None
        path = self.cache_dir / f"{shard.sha256}.tar"
        if path.is_file() and path.stat().st_size != shard.size:
            raise ShardError(
                f"{path}: the cached copy of {self.store.url}/{shard.name} is "
                f"{path.stat().st_size} bytes, the index says {shard.size}: delete it to fetch "
                "it again"
            )
        if not path.is_file():
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            with FileLock(str(path) + ".lock"):
                if not path.is_file():
                    self._fetch(shard, path)
        return path

    def _fetch(self, shard: Shard, path: Path) -> None:
        part = path.with_name(f".{path.name}.{os.getpid()}.part")
        try:
            self.store.download(shard.name, part)
            digest = hashlib.sha256()
            with part.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            size = part.stat().st_size
            if size != shard.size or digest.hexdigest() != shard.sha256:
                raise ShardError(
                    f"{self.store.url}/{shard.name}: {size} bytes, sha256 {digest.hexdigest()[:12]}"
                    f"…; the index says {shard.size} bytes, {shard.sha256[:12]}… (a corrupt or "
                    "truncated shard)"
                )
            os.replace(part, path)
        except StoreError as e:
            raise ShardError(f"{self.store.url}/{shard.name}: cannot be read ({e})") from None
        finally:
            part.unlink(missing_ok=True)

    def read(self, photo: Photo) -> bytes:
        """The photo's bytes, checked against its sha256."""
        if self._pid != os.getpid():  # a forked worker: its own descriptors
            self._files, self._pid = OrderedDict(), os.getpid()
        fd = self._files.get(photo.shard)
        if fd is None:
            if len(self._files) >= OPEN_SHARDS:  # thousands of shards: the least recent closed
                os.close(self._files.popitem(last=False)[1])
            fd = self._files[photo.shard] = os.open(self.local_path(photo.shard), os.O_RDONLY)
        self._files.move_to_end(photo.shard)
        data = os.pread(fd, photo.size, photo.offset)
        if len(data) != photo.size or hashlib.sha256(data).hexdigest() != photo.sha256:
            name = self.shards[photo.shard].name
            cached = (
                ""
                if isinstance(self.store, LocalStore)
                else (
                    f"; its cached copy {self.local_path(photo.shard)}: delete it to fetch it again"
                )
            )
            raise ShardError(
                f"{self.store.url}/{name}: the bytes of {photo.record.path} (offset "
                f"{photo.offset}) do not match the index's sha256 (a corrupt shard{cached})"
            )
        return data

    def close(self) -> None:
        for fd in self._files.values():
            os.close(fd)
        self._files = OrderedDict()


class ShardDataset(ImageDataset):
    """:class:`~inat_lightning.data.dataset.ImageDataset` over shards: the same decoding, skipping
    and samples; a photo's bytes come from its shard. A key ``(index, seed)`` (what the train
    sampler gives) draws that photo's augmentation from its own seed: the same photo, epoch and
    run get the same crop whichever process, order or restart loads it."""

    def __init__(
        self,
        reader: ShardReader,
        photos: Sequence[Photo],
        labels: Sequence[int],
        transform: Callable[[Image.Image], torch.Tensor] | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        super().__init__(".", [p.record.path for p in photos], labels, transform, max_pixels)
        self.reader, self.photos = reader, list(photos)

    def load(self, index: int) -> torch.Tensor | Image.Image:
        """The photo decoded; a failure to read it (a corrupt shard, a full cache disk, a
        store's error) is a :class:`ShardError` that stops the run, only a failure to decode
        skips the photo."""
        photo = self.photos[index]
        try:
            data = self.reader.read(photo)
        except ShardError:
            raise
        except Exception as e:  # noqa: BLE001 - every reading fault is the shard's, never a skip
            name = self.reader.shards[photo.shard].name
            raise ShardError(
                f"{self.reader.store.url}/{name}: cannot be read ({type(e).__name__}: {e})"
            ) from e
        return decode_bytes(data, Path(self.paths[index]).suffix, self.max_pixels)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any] | None:
        if not isinstance(key, tuple):
            return super().__getitem__(key)
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return super().__getitem__(index)


# ---------------------------------------------------------------------------------- writing
def plan(sizes: Sequence[int], shard_bytes: int, shard_photos: int) -> list[range]:
    """The photos (by position) of each shard: consecutive, each shard closed once it holds
    ``shard_bytes`` or ``shard_photos``. A function of the sizes alone: a rerun makes the same
    shards."""
    out, start, total = [], 0, 0
    for i, size in enumerate(sizes):
        total += size
        if total >= shard_bytes or i + 1 - start >= shard_photos:
            out.append(range(start, i + 1))
            start, total = i + 1, 0
    if start < len(sizes):
        out.append(range(start, len(sizes)))
    return out


def pack(members: Sequence[tuple[int, Record, bytes]]) -> tuple[bytes, list[tuple[int, int]]]:
    """One shard's tar (byte-for-byte the same for the same photos) and each photo's
    ``(offset, size)`` in it."""
    buf, places = io.BytesIO(), []
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for n, record, data in members:
            suffix = Path(record.path).suffix.lower() or ".img"
            for name, blob in (
                (f"{n:08d}.json", json.dumps(row_of(record), sort_keys=True).encode()),
                (f"{n:08d}{suffix}", data),
            ):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(blob), 0, 0o444
                tar.addfile(info, io.BytesIO(blob))
            padded = -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            places.append((tar.offset - padded, len(data)))  # the data ends the last member
    return buf.getvalue(), places


def class_counts(records: dict[str, list[Record]]) -> dict[str, dict[str, int]]:
    """Photos per class, per split: the card's table."""
    return {
        s: dict(sorted(Counter(r.taxon_name for r in recs).items())) for s, recs in records.items()
    }
