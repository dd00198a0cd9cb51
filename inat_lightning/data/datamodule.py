"""``LightningDataModule`` over any ImageFolder root (with or without a manifest)."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, WeightedRandomSampler

from inat_lightning.data.dataset import (
    DEFAULT_MAX_PIXELS,
    ImageDataset,
    check_readable,
    collate_skipping,
)
from inat_lightning.data.manifest import Record, load_records
from inat_lightning.data.near_duplicates import GrainsOfFiles, cluster_members, fill_hashes
from inat_lightning.data.spec import InputSpec
from inat_lightning.data.split import SPLITS, SplitSpec, write_splits
from inat_lightning.data.synthetic import SyntheticSpecies
from inat_lightning.data.taxonomy import Lineage, load_lineages
from inat_lightning.data.transforms import train_transform
from inat_lightning.validation import require, require_numbers

log = logging.getLogger(__name__)
BALANCE_MODES = ("none", "sampler", "loss")


def check_arguments(given: dict[str, Any]) -> None:
    """The data module's arguments (its ``__init__``'s locals), each by its rule, before any
    work: a bad one is an error naming it."""
    require_numbers(
        given,
        ints=("image_size", "batch_size", "num_workers", "min_per_class", "max_pixels"),
        floats=("crop_ratio", "color_jitter", "max_missing"),
    )
    v = given
    per_class_ok = v["min_per_class"] is None or v["min_per_class"] >= 1
    synthetic_ok = v["synthetic"] is None or isinstance(v["synthetic"], SyntheticSpecies)
    require(
        {
            "image_size": (v["image_size"] >= 16, ">= 16"),
            "batch_size": (v["batch_size"] >= 1, ">= 1"),
            "num_workers": (v["num_workers"] >= 0, ">= 0"),
            "balance": (v["balance"] in BALANCE_MODES, f"one of {BALANCE_MODES}"),
            "min_per_class": (per_class_ok, ">= 1 or null"),
            "crop_ratio": (0 < v["crop_ratio"] <= 1, "in (0, 1]"),
            "max_pixels": (v["max_pixels"] >= 1, ">= 1"),
            "max_missing": (0 <= v["max_missing"] <= 1, "in [0, 1]"),
            "synthetic": (
                synthetic_ok,
                "null or a generator node (with _target_, see conf/data/synthetic.yaml)",
            ),
        },
        given,
    )
    if isinstance(v["held_out_classes"], str):
        raise ValueError(f"held_out_classes={v['held_out_classes']!r}: must be a list of names")


def hold_out(
    records: list[Record], held_out_classes: Sequence[str], root: Path
) -> tuple[list[Record], list[Record] | None]:
    """The records of the trained classes, and those of ``held_out_classes`` kept aside
    (``None`` without any). A name that is no class of the data is an error, and so is holding
    out so many that fewer than 2 classes are left to train on."""
    if not held_out_classes:
        return records, None
    names = {r.taxon_name for r in records}
    unknown = [c for c in held_out_classes if c not in names]
    if unknown:
        raise ValueError(f"held_out_classes: {unknown[0]!r} is not a class of {root}")
    held = set(held_out_classes)
    if len(names - held) < 2:
        raise ValueError(
            f"held_out_classes: holds out {len(held)} of the {len(names)} classes of "
            f"{root}, leaving {len(names - held)} to train on; at least 2 are needed"
        )
    kept = [r for r in records if r.taxon_name not in held]
    return kept, [r for r in records if r.taxon_name in held]


def filter_classes(
    records: list[Record], needed: int, min_per_class: int | None, root: Path
) -> list[Record]:
    """Refuse (or drop, with ``min_per_class``) classes with fewer observations than the split
    ``needed``; fewer than 2 classes left is an error."""
    if not records:
        raise ValueError(f"root={str(root)!r}: no images found (expected root/<class>/<image>)")
    observations: dict[str, set[str]] = defaultdict(set)
    for r in records:
        observations[r.taxon_name].add(r.observation_id)
    floor = max(needed, min_per_class or 0)
    small = {c: len(o) for c, o in observations.items() if len(o) < floor}
    if small and min_per_class is None:
        worst = ", ".join(f"{c!r} ({n})" for c, n in sorted(small.items()))
        raise ValueError(
            f"class(es) with fewer than {needed} observations cannot be split {needed} ways: "
            f"{worst}."
            " Add images, or set data.min_per_class to drop small classes."
        )
    if small:
        log.warning(
            "dropping %d class(es) with < %d observations: %s",
            len(small),
            floor,
            ", ".join(sorted(small)),
        )
        records = [r for r in records if r.taxon_name not in small]
    if len(observations) - len(small) < 2:
        raise ValueError(f"root={str(root)!r}: need at least 2 classes to classify")
    return records


def folder_root(root: str | Path, synthetic: SyntheticSpecies | None) -> Path:
    """``root`` as a folder that exists (or that ``synthetic`` will make), before any work."""
    path = Path(root)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"root={str(root)!r}: a file, not a dataset folder")
    if synthetic is None and not path.is_dir():
        raise FileNotFoundError(f"root={str(root)!r}: no such directory")
    return path


def near_labels(
    split: SplitSpec, records: list[Record], root: Path, cache: Path | None, max_pixels: int
) -> tuple[list[int] | None, list[list[str]]]:
    """Each record's near-duplicate cluster and the clusters of more than one photo (paths),
    the photos' signals made first where the records lack them (only the hash when
    ``split.near_cosine`` is null: no decoding for the rest); the photos of smooth pairs are
    read again to check their grain."""
    smooth = split.near_cosine is not None
    fill_hashes(root, records, cache, max_pixels, need_lowfreq=smooth)
    paths = [r.path for r in records]
    grains = GrainsOfFiles(root, paths, max_pixels)
    near = split.near(records, grains)
    found = cluster_members(paths, near or [])
    photos = sum(len(c) for c in found)
    unread = sum(g is None for g in grains.known.values())
    log.info(
        "near-duplicates: %d clusters of %d photos kept whole (%d photos of smooth pairs read "
        "again for their grain%s)",
        len(found),
        photos,
        len(grains.known) - unread,
        f"; {unread} unreadable, their pairs kept on low frequencies" if unread else "",
    )
    if found and len(found[0]) > max(10, 0.05 * len(records)):
        log.warning(
            "near-duplicates: one cluster holds %d of %d photos (%s, ...), all in one split: "
            "a placeholder image, or signals a manifest copied from one photo? "
            "data.split.near_duplicates=false turns grouping off",
            len(found[0]),
            len(records),
            ", ".join(found[0][:3]),
        )
    return near, found


def cache_folder(hash_cache: str | Path | None) -> Path | None:
    """``data.hash_cache`` as a folder (``None``: no cache), refused before any photo is read
    when it names a file."""
    path = Path(hash_cache) if hash_cache else None
    if path is not None and path.exists() and not path.is_dir():
        raise ValueError(f"hash_cache={str(hash_cache)!r}: a file, not a folder")
    return path


def check_filled(
    split: SplitSpec,
    records: dict[str, list[Record]],
    clusters: list[list[str]],
    bare: Callable[[], set[str]],
) -> None:
    """An error naming the splits that came out empty (the classes were checked to fill every
    split; a near-duplicate cluster holding most photos, a pinning ``file`` or few observers
    can still empty one). ``bare()`` gives the splits without near-duplicate grouping: the
    clusters are named as the cause only when those fill the split."""
    wanted = {"train": True, "val": split.folds is not None or split.ratios[1] > 0}
    wanted["test"] = split.ratios[2] > 0
    empty = [name for name in SPLITS if wanted[name] and not records[name]]
    if not empty:
        return
    if clusters and all(name in bare() for name in empty):
        why = (
            f": near-duplicate clusters keep photos together, the largest holds "
            f"{len(clusters[0])} ({', '.join(map(repr, clusters[0][:3]))}, ...); "
            "data.split.near_duplicates=false turns that off"
        )
    else:
        causes = [f"file={split.file!r}" if split.file else "", f"group_by={split.group_by}"]
        why = f" ({', '.join(c for c in causes if c)})"
    splits = f"the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'}"
    raise ValueError(f"data.split: {splits} empty{why}")


def near_summary(
    split: SplitSpec, clusters: list[list[str]], split_of: dict[str, str], examples: int
) -> dict[str, object]:
    """How many clusters, their photos, the test photos with a copy in train (0: the split keeps
    clusters whole), the settings, and the paths of the largest few."""
    leaks = 0
    for cluster in clusters:
        where = [split_of.get(p) for p in cluster]
        if "train" in where:
            leaks += where.count("test")
    return {
        "clusters": len(clusters),
        "photos": sum(len(c) for c in clusters),
        "test_photos_with_a_copy_in_train": leaks,
        "max_distance": int(split.near_distance),
        "smooth_cosine": split.near_cosine,
        "examples": [c[:4] for c in clusters[:examples]],
    }


def fingerprint_of(
    root: Path,
    records: dict[str, list[Record]],
    split: dict[str, Any],
    class_names: list[str],
    class_counts: torch.Tensor,
) -> dict[str, object]:
    """What a model trained on these records learned from, for its checkpoint and model card:
    a hash of every record (path, class, observation), the split settings, training images per
    class and the photos' licences. ``split``: the split's settings."""
    digest = hashlib.sha256()
    every = sorted((r for recs in records.values() for r in recs), key=lambda r: r.path)
    for r in every:
        digest.update(f"{r.path}\t{r.taxon_name}\t{r.observation_id}\n".encode())
    licences = Counter(r.license for r in every)
    return {
        "root": str(root),
        "records_sha256": digest.hexdigest(),
        "images": len(every),
        "split": split,
        "train_images": dict(zip(class_names, class_counts.int().tolist())),
        "licences": dict(sorted(licences.items())),
    }


class ImageFolderDataModule(L.LightningDataModule):
    """Train/val/test loaders over ``root/<class>/<image>`` (plus ``root/manifest.csv`` if any).

    Args:
        root: dataset folder.
        image_size: side of the square network input, in pixels.
        split: ratios, seed and optional earlier ``splits.csv`` (see
            :mod:`~inat_lightning.data.split`).
        splits_out: where to write this run's ``splits.csv`` (``None``: don't write).
        batch_size: per device.
        num_workers: loader worker processes (0 = load in the main process).
        pin_memory: page-locked host memory (helps only with a GPU).
        persistent_workers: keep workers between epochs (when ``num_workers > 0``); off by
            default so workers restart each epoch from that epoch's seed (exact resume).
        balance: ``none``; ``sampler`` (class-balanced sampling of the train set); ``loss``
            (the model weights its loss by inverse class frequency, see :attr:`class_weights`).
        min_per_class: ``None``: a class with too few observations for every split is an error;
            an int: classes with fewer observations than that are dropped with a warning.
        crop_scale: scale range of the train ``RandomResizedCrop``.
        color_jitter: strength of the train colour jitter (0 = off).
        crop_ratio: evaluation resizes to ``image_size / crop_ratio``, then centre-crops.
        synthetic: when given, ``root`` is (re)generated with it if it doesn't hold that dataset.
        max_pixels: images whose header announces more pixels are skipped, not decoded.
        max_missing: the share of manifest rows whose file may be missing (dropped with one
            warning line), and of a sample of the images that may not open as images; above it,
            an error before any work (a manifest that does not describe its folder).
        hash_cache: a folder keeping the perceptual hashes of photos the manifest gives none
            for (``split.near_duplicates``), so they are computed once per file.
        held_out_classes: species left out of training altogether: their photos form the
            ``held_out`` set on which ``evaluate.py`` measures out-of-set detection.
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int = 64,
        split: SplitSpec | None = None,
        splits_out: str | Path | None = None,
        batch_size: int = 32,
        num_workers: int = 2,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        balance: str = "none",
        min_per_class: int | None = None,
        crop_scale: Sequence[float] = (0.35, 1.0),
        color_jitter: float = 0.1,
        crop_ratio: float = 0.875,
        synthetic: SyntheticSpecies | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_missing: float = 0.05,
        hash_cache: str | Path | None = None,
        held_out_classes: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.split = split or SplitSpec()
        check_arguments(locals())
        self.root = self.check_root(root, synthetic)
        self.image_size, self.splits_out, self.synthetic = image_size, splits_out, synthetic
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.balance, self.min_per_class = balance, min_per_class
        self.crop_scale, self.color_jitter = tuple(crop_scale), color_jitter
        self.max_pixels, self.spec = max_pixels, InputSpec(image_size, crop_ratio)
        self.max_missing = max_missing
        self.hash_cache = cache_folder(hash_cache)
        self.held_out_classes = [str(c) for c in held_out_classes or ()]
        #: near-duplicate clusters of more than one photo, as lists of record paths (setup)
        self.near_clusters: list[list[str]] = []
        self._split_of: dict[str, str] = {}
        self.class_names: list[str] = []
        self.lineages: dict[str, Lineage] | None = None  # from root/taxa.csv, when present
        self.records: dict[str, list[Record]] = {}
        self.datasets: dict[str, ImageDataset] = {}

    check_root = staticmethod(folder_root)  # a data module of other storage overrides it

    # ------------------------------------------------------------------ setup
    def prepare_data(self) -> None:
        if self.synthetic is not None:
            self.synthetic.ensure(self.root)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.prepare_data()  # idempotent; lets a bare ``setup()`` work outside a Trainer
        found = self.keep(load_records(self.root, self.max_missing))
        records, held = hold_out(found, self.held_out_classes, self.root)
        if held is not None:
            self.records["held_out"] = held
        records = filter_classes(records, self.split.needed, self.min_per_class, self.root)
        check_readable(
            self.root, [r.path for r in records], self.max_missing, max_pixels=self.max_pixels
        )
        near = None
        if self.split.near_duplicates:
            found = near_labels(self.split, records, self.root, self.hash_cache, self.max_pixels)
            near, self.near_clusters = found
        splits = self.split.assign(records, near)
        if self.splits_out:
            moved = self.split.moved(records, splits, near)
            write_splits(self.splits_out, records, splits, moved)
        self.class_names = sorted({r.taxon_name for r in records})
        self.lineages = load_lineages(self.root, self.class_names)
        if self.lineages is None:
            log.info("no taxonomy (%s/taxa.csv): metrics at species level only", self.root)
        index = {name: i for i, name in enumerate(self.class_names)}
        for name in SPLITS:
            self.records[name] = [r for r, s in zip(records, splits) if s == name]
        self._split_of = {r.path: s for r, s in zip(records, splits)}
        check_filled(
            self.split, self.records, self.near_clusters, lambda: set(self.split.assign(records))
        )
        train = train_transform(self.image_size, self.crop_scale, color_jitter=self.color_jitter)
        tf = {"train": train, "val": self.spec.transform(), "test": self.spec.transform()}
        for name in (*SPLITS, "held_out") if self.held_out_classes else SPLITS:
            recs = self.records[name]
            labels = [index.get(r.taxon_name, -1) for r in recs]  # held out: -1
            transform = tf.get(name, tf["test"])
            paths = [r.path for r in recs]
            self.datasets[name] = ImageDataset(self.root, paths, labels, transform, self.max_pixels)
        sizes = {k: len(v) for k, v in self.datasets.items()}
        log.info("%d classes, images per split: %s", self.num_classes, sizes)

    def keep(self, records: list[Record]) -> list[Record]:
        """The manifest's records this module uses, before any split: all of them. The hook a
        data module of one's own overrides to leave photos out (``examples/my_lab``)."""
        return records

    def near_duplicate_summary(self, examples: int = 4) -> dict[str, object] | None:
        """The near-duplicate clusters found (``None`` when turned off): see
        :func:`near_summary`."""
        if not self.split.near_duplicates:
            return None
        return near_summary(self.split, self.near_clusters, self._split_of, examples)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def class_counts(self) -> torch.Tensor:
        """Train images per class."""
        counts = Counter(self.datasets["train"].labels)
        return torch.tensor([counts.get(i, 0) for i in range(self.num_classes)], dtype=torch.float)

    @property
    def class_weights(self) -> torch.Tensor | None:
        """Inverse-frequency loss weights (mean 1) when ``balance='loss'``, else ``None``."""
        if self.balance != "loss":
            return None
        w = 1.0 / self.class_counts.clamp(min=1)
        return w * self.num_classes / w.sum()

    def input_spec(self) -> InputSpec:
        """How evaluation inputs are made (built once; the checkpoint keeps it)."""
        return self.spec

    def fingerprint(self) -> dict[str, object]:
        """What a model trained here learned from (:func:`fingerprint_of`)."""
        return fingerprint_of(
            self.root, self.records, self.split.settings(), self.class_names, self.class_counts
        )

    def _eval_sampler(self, split: str) -> UnrepeatedDistributedSampler | None:
        """Under DDP, shard val/test without the padding of ``DistributedSampler``: every image
        is evaluated exactly once, so synced metrics and confusion matrices count each once."""
        trainer = self.trainer
        if trainer is None or trainer.world_size <= 1:
            return None
        ranks = {"num_replicas": trainer.world_size, "rank": trainer.global_rank}
        return UnrepeatedDistributedSampler(self.datasets[split], shuffle=False, **ranks)

    def _loader(self, split: str, shuffle: bool = False, sampler=None, kind=DataLoader):
        # drop a ragged last train batch: a batch of one breaks BatchNorm and adds noise
        drop_last = split == "train" and len(self.datasets[split]) > self.batch_size
        return kind(
            self.datasets[split], batch_size=self.batch_size, shuffle=shuffle and sampler is None,
            sampler=sampler, num_workers=self.num_workers, pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers, collate_fn=collate_skipping,
            drop_last=drop_last,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        sampler = None
        if self.balance == "sampler":
            labels = torch.tensor(self.datasets["train"].labels)
            weights = (1.0 / self.class_counts.clamp(min=1))[labels]
            sampler = WeightedRandomSampler(weights, num_samples=len(labels), replacement=True)
        return self._loader("train", shuffle=True, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", sampler=self._eval_sampler("val"))

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", sampler=self._eval_sampler("test"))
