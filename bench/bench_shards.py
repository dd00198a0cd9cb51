"""Shards vs one file per photo, in one run: epoch read throughput (read + decode, through the
default loader: 2 workers) from an S3-compatible server on 127.0.0.1 with a per-request delay (a
network store), and from local disk; files opened per epoch; time and peak memory to build
shards of 100k photos.

    python -m bench.bench_shards [--photos 2000] [--shard-photos 200] [--latencies 5 20]
                                 [--build 100000]

The ImageFolder baseline on the store is the same layout as on disk, one object per photo
(what a bucket synced from ``scrape.py`` holds), each read with one GET. The read runs' shard
sets hold ``--shard-photos`` photos a shard (several shards a split, as a large set has at the
default 64 MB); shard reads start from an empty cache every epoch (a cold epoch: every shard
fetched while the epoch runs).
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from bench.common import report
from inat_lightning.data.dataset import ImageDataset, decode_bytes
from inat_lightning.data.manifest import Record, sha256_of, write_manifest
from inat_lightning.data.stores import Store, open_store
from tests.cluster.s3_server import make_bucket, running

REPO = Path(__file__).resolve().parents[1]


def photo_bytes(n: int, size: int) -> list[bytes]:
    """``n`` real photos (crops of the sample photos scikit-learn ships), JPEG at ``size`` px."""
    from sklearn.datasets import load_sample_images

    sources = [Image.fromarray(a) for a in load_sample_images().images]
    rng = random.Random(0)
    out = []
    for i in range(n):
        src = sources[i % len(sources)]
        side = rng.randint(120, 400)
        x, y = rng.randint(0, src.width - side), rng.randint(0, src.height - side)
        buf = io.BytesIO()
        src.crop((x, y, x + side, y + side)).resize((size, size)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def write_dataset(root: Path, photos: list[bytes], classes: int) -> list[Record]:
    """An ImageFolder with its manifest (hashes given, as a scrape writes them)."""
    rng = random.Random(1)
    records = []
    for i, data in enumerate(photos):
        taxon = f"Species {i % classes:04d}"
        path = f"{taxon}/{i}.jpg"
        (root / taxon).mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
        records.append(
            Record(
                str(i), str(i // 2), str(i % classes), taxon, path, sha256=sha256_of(data),
                phash=f"{rng.getrandbits(64):016x}", lowfreq=f"{rng.getrandbits(136):034x}",
            )
        )  # fmt: skip
    write_manifest(root / "manifest.csv", records)
    return records


#: runs the build as ``python -m`` does, then says its own peak memory (RSS) on stderr
PEAK = (
    "import resource, runpy, sys\n"
    "sys.argv = ['inat_lightning.shards', *sys.argv[1:]]\n"
    "try:\n    runpy.run_module('inat_lightning.shards', run_name='__main__', alter_sys=True)\n"
    "finally:\n"
    "    print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)"
)


def build(root: Path, out: str, env: dict[str, str] | None = None, *extra: str) -> dict:
    """``python -m inat_lightning.shards build``: seconds and the process's peak memory."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as logs:
        done = subprocess.run(
            [sys.executable, "-c", PEAK, "build", str(root), f"out={out}",
             f"paths.log_dir={logs}", f"paths.data_dir={logs}", *extra],
            check=True, cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True,
            text=True,
        )  # fmt: skip
    seconds = round(time.perf_counter() - t0, 1)
    peak = int(done.stderr.rsplit("PEAK ", 1)[1].split()[0])
    return {"seconds": seconds, "peak_mb": round(peak / 1024)}


def key(path: str) -> str:
    """A photo's object name (a species' space as ``_``)."""
    return path.replace(" ", "_")


class StoreFolder(ImageDataset):
    """ImageFolder's layout on a store: one GET per photo."""

    def __init__(self, store: Store, paths: list[str]) -> None:
        super().__init__(".", paths, [0] * len(paths))
        self.store = store

    def load(self, index: int):
        return decode_bytes(self.store.read(key(self.paths[index])), ".jpg")


def epoch_rate(dataset, rounds: int, fresh_cache: Path | None = None) -> float:
    """Photos per second over one pass of the default loader (2 workers); the best of
    ``rounds`` (the fewest interruptions by the rest of the machine)."""
    from torch.utils.data import DataLoader

    best = 0.0
    for _ in range(rounds):
        if fresh_cache is not None:
            shutil.rmtree(fresh_cache, ignore_errors=True)
        loader = DataLoader(dataset, batch_size=32, num_workers=2, collate_fn=lambda b: len(b))
        t0 = time.perf_counter()
        n = sum(loader)
        best = max(best, n / (time.perf_counter() - t0))
    return round(best, 1)


def opened(dataset) -> int:
    """Files opened (Python ``open`` audit events) by one in-process pass."""
    count = [0]

    def hook(event: str, args: tuple) -> None:
        if event == "open" and isinstance(args[0], str | bytes | os.PathLike):
            count[0] += 1

    sys.addaudithook(hook)  # stays (audit hooks cannot be removed): counted around the pass
    start = count[0]
    for i in range(len(dataset)):
        dataset[i]
    return count[0] - start


def shard_dataset(url: str, cache: Path):
    from inat_lightning.data.shard_datamodule import ShardDataModule

    dm = ShardDataModule(url, cache_dir=cache)
    dm.setup()
    ds = dm.datasets["train"]
    ds.transform = None
    return ds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--size", type=int, default=160, help="photo side (px)")
    parser.add_argument("--latencies", type=float, nargs="+", default=[5.0, 20.0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--build", type=int, default=100_000, help="photos of the build run")
    parser.add_argument(
        "--shard-photos", type=int, default=200, help="photos a shard (the read runs' sets)"
    )
    args = parser.parse_args()
    results: dict = {
        "photos": args.photos,
        "photo_px": args.size,
        "shard_photos": args.shard_photos,
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = photo_bytes(args.photos, args.size)
        records = write_dataset(tmp / "photos", data, classes=20)
        results["photo_kb"] = round(sum(map(len, data)) / len(data) / 1024, 1)
        few = f"shard_photos={args.shard_photos}"  # several shards a split, as at scale
        results[f"build_{args.photos}"] = build(tmp / "photos", str(tmp / "set"), None, few)
        local = shard_dataset(str(tmp / "set"), tmp / "cache")
        train = {r.path for r in records} & set(local.paths)
        folder = ImageDataset(tmp / "photos", sorted(train), [0] * len(train))
        local_shards = epoch_rate(local, args.rounds)
        local_folder = epoch_rate(folder, args.rounds)
        results["local_disk"] = {
            "imagefolder_photos_per_s": local_folder,
            "shards_photos_per_s": local_shards,
            "ratio": round(local_shards / local_folder, 2),
            "files_opened_per_epoch": {"imagefolder": opened(folder), "shards": opened(local)},
        }
        for latency in args.latencies:
            with running(latency_ms=latency) as env:
                os.environ.update(env)
                make_bucket(env, "bench")
                store = open_store("s3://bench/photos")
                for path in train:
                    store.write(key(path), (tmp / "photos" / path).read_bytes())
                build(tmp / "photos", "s3://bench/set", env, few)
                remote = shard_dataset("s3://bench/set", tmp / "s3cache")
                on_store = StoreFolder(open_store("s3://bench/photos"), sorted(train))
                shards_rate = epoch_rate(remote, args.rounds, fresh_cache=tmp / "s3cache")
                folder_rate = epoch_rate(on_store, args.rounds)
                results[f"s3_{latency:g}ms"] = {
                    "imagefolder_photos_per_s": folder_rate,
                    "shards_photos_per_s": shards_rate,
                    "ratio": round(shards_rate / folder_rate, 2),
                    "requests_per_epoch": {
                        "imagefolder": len(train),
                        "shards": len(remote.reader.shards),
                    },
                }
        if args.build:
            big = tmp / "big"
            one = photo_bytes(200, 64)  # small photos: 100k of them fit a laptop's disk
            variants = [
                d + i.to_bytes(4, "big") for i, d in zip(range(args.build), itertools.cycle(one))
            ]
            write_dataset(big, variants, classes=100)
            results[f"build_{args.build}"] = build(big, str(tmp / "bigset"))
    report("shards", results)


if __name__ == "__main__":
    main()
