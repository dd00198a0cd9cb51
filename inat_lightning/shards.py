"""``python -m inat_lightning.shards build <dataset root> out=<folder or s3://bucket/prefix>``:
a dataset's photos written as shards (:mod:`inat_lightning.data.shards`), one set per split.

The split is decided first, exactly as ``train.py`` decides it (``data.split.*``, or a run's
``splits.csv`` with ``data.split.file=``: near-duplicates and observations kept whole), never
inside the sharding. Deterministic (the same photos make the same bytes) and resumable: each
shard is written whole with a small sidecar of its photos, and a rerun keeps the shards of the
same plan already there. The card (``shards.json``) is written last.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from inat_lightning import __version__
from inat_lightning.config import ConfigError
from inat_lightning.config import build as build_node
from inat_lightning.data.dataset import resolve_inside
from inat_lightning.data.manifest import Record, sha256_of
from inat_lightning.data.shards import (
    CARD,
    FORMAT,
    VERSION,
    class_counts,
    index_name,
    pack,
    plan,
    row_of,
)
from inat_lightning.data.stores import LocalStore, Store, StoreError, open_store
from inat_lightning.locks import hold
from inat_lightning.progress import progress

log = logging.getLogger(__name__)


def group_id(k: int, members: list[tuple[int, Record]], sizes: list[int]) -> str:
    """A shard's identity: the format, its place, and its photos' numbers, rows and sizes. It
    names the shard's file, so a build of other photos or rows never writes over (or keeps) it."""
    digest = hashlib.sha256(f"{FORMAT} {VERSION} {k}\n".encode())
    for (n, record), size in zip(members, sizes):
        digest.update(json.dumps([n, row_of(record), size], sort_keys=True).encode())
    return digest.hexdigest()[:12]


def kept_shard(
    store: Store, name: str, members: list[tuple[int, Record]], now: list[list[int]]
) -> dict[str, Any] | None:
    """The sidecar of a shard an earlier (interrupted) build wrote from these very photos (its
    rows, and files unchanged since), the shard there at its size; else ``None``."""
    try:
        side = json.loads(store.read(name + ".json"))
        rows = [p["row"] for p in side["photos"]]
        same = side["stats"] == now and rows == [row_of(r) for _, r in members]
        size = side["shard"]["size"]
    except (StoreError, ValueError, KeyError, TypeError):
        return None
    return side if same and store.size(name) == size else None


def write_split(
    store: Store, root: Path, split: str, records: list[Record], cfg: DictConfig, bar: Any
) -> dict[str, Any]:
    """One split's shards, sidecars and index; what the card says of it."""
    real = root.resolve()
    records = sorted(records, key=lambda r: r.path)
    # each photo's file as it is now (size, modification time), read once: the plan's sizes,
    # and what a kept shard's photos must still be
    stats = [
        [st.st_size, st.st_mtime_ns]
        for st in (resolve_inside(real, r.path).stat() for r in records)
    ]
    sizes = [size for size, _ in stats]
    groups = plan(sizes, int(cfg.shard_mb * 2**20), int(cfg.shard_photos))
    shards, photos, kept = [], [], 0
    for k, group in enumerate(groups):
        members = [(i, records[i]) for i in group]
        name = f"{split}/shard-{k:05d}-{group_id(k, members, [sizes[i] for i in group])}.tar"
        now = [stats[i] for i in group]
        side = kept_shard(store, name, members, now)
        if side is None:
            side = write_shard(store, real, name, k, members)
            side["stats"] = now
            store.write(name + ".json", json.dumps(side).encode())  # the shard's there: kept
        else:
            kept += 1
        shards.append(side["shard"])
        photos.extend(side["photos"])
        bar.update(len(group))
    if kept:
        log.info("%s: kept %d of %d shards an earlier build had written", split, kept, k + 1)
    index = {"shards": shards, "photos": photos}
    store.write(index_name(split), json.dumps(index).encode())
    return {"photos": len(records), "shards": len(shards), "bytes": sum(s["size"] for s in shards)}


def write_shard(
    store: Store, real: Path, name: str, k: int, members: list[tuple[int, Record]]
) -> dict[str, Any]:
    """Shard ``k`` of its split; its entry and its photos' entries (what the index is made
    of)."""
    loaded = []
    for n, record in members:
        data = resolve_inside(real, record.path).read_bytes()
        if record.sha256 and sha256_of(data) != record.sha256:
            log.warning("%s: its bytes are not the manifest's sha256 (changed since)", record.path)
        loaded.append((n, record, data))
    tar, places = pack(loaded)
    store.write(name, tar)
    entry = {"name": name, "size": len(tar), "sha256": sha256_of(tar)}
    photos = [
        {"shard": k, "offset": o, "size": s, "sha256": sha256_of(d), "row": row_of(r)}
        for (_, r, d), (o, s) in zip(loaded, places)
    ]
    return {"shard": entry, "photos": photos}


def check(cfg: DictConfig) -> Store:
    """The command's own values, before any work."""
    if OmegaConf.select(cfg, "out", default=None) is None:
        raise ConfigError("out: required (a folder or s3://bucket/prefix): out=<where>")
    for key in ("shard_mb", "shard_photos"):
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"{key}={value!r}: must be a number > 0")
    try:
        return open_store(str(cfg.out))
    except ValueError as e:
        raise ConfigError(f"out={cfg.out}: {e}") from e


def build(cfg: DictConfig) -> dict[str, Any]:
    """The task: split the dataset as ``train.py`` would, write every split's shards, then the
    card. Returns the card."""
    store = check(cfg)
    dm = build_node(cfg.data, "data", splits_out=None)
    dm.setup()
    if isinstance(store, LocalStore):
        store.root.mkdir(parents=True, exist_ok=True)
        lock = hold(store.root / ".build.lock", f"the shard set {store.url}")  # noqa: F841
    total = sum(len(v) for v in dm.records.values())
    splits = {}
    with progress(total=total, desc=f"shards → {store.url}", unit="photo") as bar:
        for split, records in dm.records.items():
            splits[split] = write_split(store, dm.root, split, records, cfg, bar)
    counts = class_counts(dm.records)
    for split, found in splits.items():
        found["per_class"] = counts[split]
    card = {
        "format": FORMAT,
        "version": VERSION,
        "built_with": f"inat-lightning {__version__}",
        "source": str(dm.root),
        "classes": dm.class_names,
        "splits": splits,
        "fingerprint": dm.fingerprint(),
        "near_duplicates": dm.near_duplicate_summary(),
        "lineages": dm.lineages,
    }
    store.write(CARD, json.dumps(card, indent=1).encode())
    for split, found in splits.items():
        print(
            f"{split}: {found['photos']} photos in {found['shards']} shards ({found['bytes']:,} B)"
        )
    print(f"shard set: {store.url}/{CARD} (train with data=shards data.root={store.url})")
    return card


USAGE = (
    "usage: python -m inat_lightning.shards build <dataset root> out=<folder|s3://…> [overrides]"
)


def main() -> None:
    """``build <root> [overrides]`` → the Hydra task with ``data.root=<root>``."""
    args = sys.argv[1:]
    if args[:1] in (["--version"], ["--help"]) or args[:1] == ["-h"]:
        args = ["build", *args]
    if not args or args[0] != "build":
        sys.exit(USAGE)
    rest = args[1:]
    if rest and "=" not in rest[0] and not rest[0].startswith("-"):
        rest = [f"data.root={rest[0]}", *rest[1:]]
    sys.argv = [sys.argv[0], *rest]
    from inat_lightning.cli import shards

    shards()


if __name__ == "__main__":
    main()
