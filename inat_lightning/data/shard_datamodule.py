"""``data=shards``: the data module over a shard set built by ``python -m inat_lightning.shards
build`` (a folder or ``s3://bucket/prefix``), as :class:`ImageFolderDataModule` is over the
photos it was built from: the same classes, splits, transforms, balance and metrics, every
val/test photo counted once under DDP; its train loader resumes exactly mid-epoch."""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from inat_lightning.atomic import replacing
from inat_lightning.data.datamodule import ImageFolderDataModule, fingerprint_of
from inat_lightning.data.dataset import DEFAULT_MAX_PIXELS
from inat_lightning.data.manifest import sha256_of
from inat_lightning.data.resumable import EpochSampler, ResumableLoader
from inat_lightning.data.shards import (
    CARD,
    ShardDataset,
    ShardError,
    ShardReader,
    read_card,
    read_index,
)
from inat_lightning.data.split import SPLITS, write_splits
from inat_lightning.data.stores import is_remote, open_store
from inat_lightning.data.transforms import train_transform
from inat_lightning.validation import require, require_numbers

log = logging.getLogger(__name__)


def lineages_of(card: dict[str, Any], classes: Sequence[str]) -> dict[str, dict[str, str]] | None:
    """The card's lineages (class → rank → name) of ``classes``, text only."""
    found = card.get("lineages") or {}
    if not isinstance(found, dict):
        return None
    kept = {
        c: {str(k): str(v) for k, v in found[c].items()}
        for c in classes
        if isinstance(found.get(c), dict)
    }
    return kept or None


def check_fingerprint(
    url: str, card: dict[str, Any], records: dict[str, list], classes: list[str]
) -> None:
    """The indexes must hold the records the card was written for."""
    want = card["fingerprint"]["records_sha256"]
    got = fingerprint_of(url, records, {}, classes, torch.zeros(len(classes)))["records_sha256"]
    if got != want:
        raise ShardError(
            f"{url}: the split indexes do not hold the photos {CARD} describes "
            f"(records_sha256 {got[:12]}…, the card says {want[:12]}…)"
        )


class ShardDataModule(ImageFolderDataModule):
    """Train/val/test (and held-out) loaders over shards.

    Args:
        root: the shard set: a folder, or ``s3://bucket/prefix`` (credentials and endpoint from
            ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``).
        cache_dir: where a remote set's shards are kept once fetched (by content: shared by
            runs and processes).
        seed: the train order's and augmentations' seed (each photo draws its own from it, the
            epoch and its place in the epoch).
        The others: as :class:`~inat_lightning.data.datamodule.ImageFolderDataModule`'s.
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int = 64,
        cache_dir: str | Path | None = None,
        seed: int | None = 0,
        splits_out: str | Path | None = None,
        batch_size: int = 32,
        num_workers: int = 2,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        balance: str = "none",
        crop_scale: Sequence[float] = (0.35, 1.0),
        color_jitter: float = 0.1,
        crop_ratio: float = 0.875,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        require_numbers({"seed": seed}, ints=("seed",))
        require({"seed": (seed is None or 0 <= seed < 2**31, "in [0, 2**31) or null")}, locals())
        self._photos: Path | None = None
        self.store = open_store(root)  # a malformed URL fails here, before any work
        super().__init__(
            root, image_size, splits_out=splits_out, batch_size=batch_size,
            num_workers=num_workers, pin_memory=pin_memory,
            persistent_workers=persistent_workers, balance=balance, crop_scale=crop_scale,
            color_jitter=color_jitter, crop_ratio=crop_ratio, max_pixels=max_pixels,
        )  # fmt: skip
        self.url, self.seed = self.store.url, seed or 0
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        if is_remote(root) and self.cache_dir is None:
            raise ValueError("cache_dir=None: a remote shard set needs a folder to cache shards")
        self.card: dict[str, Any] = {}

    @staticmethod
    def check_root(root: str | Path, synthetic: Any) -> Path:
        """A local shard set's folder must exist; a remote one is looked at in :meth:`setup`."""
        if not is_remote(root) and not (Path(root) / CARD).is_file():
            raise FileNotFoundError(f"root={str(root)!r}: no shard set ({CARD}) here")
        return Path(str(root))

    def prepare_data(self) -> None:
        """Nothing to make: the shards were built beforehand."""

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        card = read_card(self.store)
        classes = list(card["classes"])
        missing = [s for s in SPLITS if s not in card["splits"]]
        if missing:
            raise ShardError(f"{self.url}/{CARD}: no {missing[0]} split")
        index = {name: i for i, name in enumerate(classes)}
        records, datasets = {}, {}
        for split in card["splits"]:
            shards, photos = read_index(self.store, split)
            labels = [index.get(p.record.taxon_name, -1) for p in photos]
            if split != "held_out" and -1 in labels:
                name = photos[labels.index(-1)].record.taxon_name
                raise ShardError(f"{self.url}/{split}: class {name!r} is not in {CARD}")
            records[split] = [p.record for p in photos]
            reader = ShardReader(self.store, shards, self.cache_dir)
            datasets[split] = ShardDataset(reader, photos, labels, None, self.max_pixels)
        check_fingerprint(self.url, card, records, classes)
        # checked: from here on the module holds the set
        self.card, self.class_names, self.records, self.datasets = card, classes, records, datasets
        train = train_transform(self.image_size, self.crop_scale, color_jitter=self.color_jitter)
        for split, ds in datasets.items():
            ds.transform = train if split == "train" else self.spec.transform()
        self.held_out_classes = sorted({r.taxon_name for r in records.get("held_out", [])})
        self.lineages = lineages_of(card, classes)
        if self.splits_out and (self.trainer is None or self.trainer.is_global_zero):
            every = [(r, s) for s in SPLITS for r in records[s]]
            write_splits(self.splits_out, [r for r, _ in every], [s for _, s in every])
        sizes = {k: len(v) for k, v in datasets.items()}
        log.info("%s: %d classes, images per split: %s", self.url, self.num_classes, sizes)

    def fingerprint(self) -> dict[str, object]:
        """The source manifest's fingerprint, as a run on its ImageFolder records it (the
        shard set in ``root``)."""
        split = self.card["fingerprint"].get("split", {}) if self.card else {}
        found = fingerprint_of(self.url, self.records, split, self.class_names, self.class_counts)
        return {**found, "shards": self.url}

    def near_duplicate_summary(self, examples: int = 4) -> dict[str, object] | None:
        """What the build found (the split was decided before sharding); its example clusters
        only where every photo is one this module writes into :attr:`root` (not train's)."""
        found = self.card.get("near_duplicates")
        if found is None:
            return None
        here = {r.path for k, recs in self.records.items() if k != "train" for r in recs}
        shown = [c for c in found.get("examples") or [] if set(c) <= here]
        return {**found, "examples": shown[:examples]}

    @property
    def root(self) -> Path:
        """The folder the audit and the galleries open photos from (the protocol's ``root``):
        the val, test and held-out photos, written once into ``cache_dir`` (a temporary
        folder without one) at their records' paths."""
        if not self.datasets:  # before setup: nothing to write yet
            return Path(self.url)
        if self._photos is None:
            base = self.cache_dir or Path(tempfile.mkdtemp(prefix="inat-shard-photos-"))
            held = [
                s.sha256 for k, d in self.datasets.items() if k != "train" for s in d.reader.shards
            ]
            self._photos = (
                base / "photos" / hashlib.sha256(" ".join(held).encode()).hexdigest()[:16]
            )
            for split, ds in self.datasets.items():
                if split != "train":
                    self._write_photos(ds, self._photos)
        return self._photos

    @root.setter
    def root(self, value: Path) -> None:
        """Set by the parent's ``__init__``: a shard set's photo folder is made on demand."""

    def _write_photos(self, ds: ShardDataset, folder: Path) -> None:
        for photo in ds.photos:
            path = folder / photo.record.path  # checked relative when the index was read
            if not path.is_file() or sha256_of(path.read_bytes()) != photo.sha256:
                path.parent.mkdir(parents=True, exist_ok=True)
                with replacing(path) as tmp:  # other processes may read it meanwhile
                    tmp.write_bytes(ds.reader.read(photo))

    def _progress(self) -> tuple[int, int]:
        """The trainer's processed batches of this epoch, and the epoch's batches."""
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return done, int(min(trainer.num_training_batches, 2**62))

    def train_dataloader(self) -> ResumableLoader:
        data = self.datasets["train"]
        weights = None
        if self.balance == "sampler":
            weights = (1.0 / self.class_counts.clamp(min=1))[torch.tensor(data.labels)]
        trainer = self.trainer
        ranks = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        records = self.card["fingerprint"]["records_sha256"]
        data_id = int(records[:15], 16)  # the shard set's records (checked hex at setup)
        sampler = EpochSampler(data, self.seed, *ranks, weights=weights, data_id=data_id)
        sampler.set_epoch(trainer.current_epoch if trainer else 0)
        loader = self._loader("train", sampler=sampler, kind=ResumableLoader)
        loader.progress = self._progress
        return loader
