"""Three-way train/val/test split: grouped by observation, stratified by class, deterministic,
stable.

Each observation gets a number ``u`` in [0, 1) from a hash of ``(seed, class, observation_id)``
and goes to ``train`` / ``val`` / ``test`` by where ``u`` falls in the cumulative ratios. So:

* all photos of one observation land in the same split (**grouped**);
* each class is split by its own hashes, so its share in each split tends to the ratios
  (**stratified**); for small classes, see below;
* the same seed gives the same split on any machine (**deterministic**);
* adding images or observations later never moves an existing observation (**stable**), because
  an observation's ``u`` depends on nothing else.

Small classes: if hashing leaves a split of a class empty (likely below ~20 observations), the
observation whose ``u`` is closest to that split's interval moves into it, so every class is
seen in every split. That repair depends only on the class's own observations, and it is the
one exception to stability: when observations are added to a class that needed a repair (before
or after), a repaired observation may go back to its hashed split and another may be moved.
``splits.csv`` marks every moved observation (``moved`` column: its split is not the one its
hash gives); passing an earlier ``splits.csv`` as ``data.split.file`` pins every observation it
lists, small classes included.

``group_by=observer`` hashes observers instead (across classes): one person's photos never sit
in two splits, which measures how a model does on people it has not seen (a model that learned
one angler's boat does not generalise). ``folds=K`` turns the train+val part into K folds for
cross-validation, the test split fixed.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from inat_lightning.data.manifest import Record
from inat_lightning.data.near_duplicates import DEFAULT_DISTANCE, SMOOTH_COSINE, clusters

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


def _unit_hash(seed: int, label: str, observation_id: str) -> float:
    digest = hashlib.blake2b(f"{seed}\x00{label}\x00{observation_id}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") / 2**64


def check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    """Validate ``(train, val, test)`` ratios: three non-negative numbers, train > 0, sum 1."""
    if len(ratios) != 3:
        raise ValueError(f"ratios={list(ratios)}: need three numbers (train, val, test)")
    r = tuple(float(x) for x in ratios)
    if any(x < 0 for x in r) or r[0] <= 0:
        raise ValueError(f"ratios={list(r)}: must be non-negative, with train > 0")
    if abs(sum(r) - 1.0) > 1e-6:
        raise ValueError(f"ratios={list(r)}: must sum to 1 (they sum to {sum(r):g})")
    return r  # type: ignore[return-value]


def hashed_split(seed: int, label: str, group: str, ratios: Sequence[float]) -> str:
    """The split the hash alone gives a group (before any small-class repair)."""
    r = check_ratios(ratios)
    u = _unit_hash(seed, label, group)
    return SPLITS[0 if u < r[0] else 1 if u < r[0] + r[1] else 2]


def assign_observations(
    observations: dict[str, list[str]], ratios: Sequence[float], seed: int
) -> dict[str, str]:
    """Split observations.

    Args:
        observations: class label → its observation ids.
        ratios: (train, val, test) fractions summing to 1.
        seed: changes the whole assignment.

    Returns:
        observation id → ``"train"`` / ``"val"`` / ``"test"``.
    """
    r = check_ratios(ratios)
    edges = (r[0], r[0] + r[1], 1.0)
    wanted = [i for i, x in enumerate(r) if x > 0]
    out: dict[str, str] = {}
    for label, obs_ids in observations.items():
        u = {o: _unit_hash(seed, label, o) for o in set(obs_ids)}
        split = {o: next(i for i, e in enumerate(edges) if x < e) for o, x in u.items()}
        if len(u) >= len(wanted):  # repair empty splits of small classes
            for s in wanted:
                if s in split.values():
                    continue
                lo, hi = (edges[s - 1] if s else 0.0), edges[s]
                counts = Counter(split.values())
                donors = [o for o in u if counts[split[o]] > 1]
                best = min(donors, key=lambda o: min(abs(u[o] - lo), abs(u[o] - hi)))
                split[best] = s
        out.update({o: SPLITS[s] for o, s in split.items()})
    return out


GROUP_BY = ("observation", "observer")


def group_of(rec: Record, group_by: str) -> str:
    """The unit that stays whole in one split: the observation, or its observer (a record
    without an observer is a group of its own observation)."""
    if group_by == "observer" and rec.observer_id:
        return f"user:{rec.observer_id}"
    return f"obs:{rec.observation_id}"


def assign_folds(
    groups: dict[str, list[str]], test_share: float, folds: int, fold: int, seed: int
) -> dict[str, str]:
    """k-fold assignment: the test split as the three-way split with the same seed and test
    share gives it (fixed across folds), the rest dealt into ``folds`` folds; fold ``fold`` is
    ``val``, the others ``train``.

    Each label's remaining groups are sorted by a hash and dealt in turn, so folds differ in
    size by at most one group per label (stratified). Unlike the three-way split, adding data
    re-deals the folds.
    """
    out = assign_observations(groups, (1.0 - test_share, 0.0, test_share), seed)
    for label, ids in groups.items():
        rest = sorted(
            (g for g in set(ids) if out[g] != "test"),
            key=lambda g: _unit_hash(seed, f"{label}\x00fold", g),
        )
        for position, g in enumerate(rest):
            out[g] = "val" if position % folds == fold else "train"
    return out


def units(
    records: Sequence[Record], group_by: str, near: Sequence[int] | None = None
) -> tuple[list[str], list[str]]:
    """Each record's split unit and the label it is stratified under: its group
    (:func:`group_of`), merged with every group it shares a near-duplicate cluster with
    (``near``: a cluster label per record, see :mod:`.near_duplicates`), so copies of a photo
    never straddle splits. A merged unit is named by its smallest group and stratified under
    its smallest label; an unmerged one keeps its own (the same split as without ``near``)."""
    keys = [group_of(rec, group_by) for rec in records]
    labels = [rec.taxon_name if group_by == "observation" else "" for rec in records]
    if near is None:
        return keys, labels
    parent: dict[str, str] = {}

    def find(k: str) -> str:
        while parent.get(k, k) != k:
            parent[k] = parent.get(parent[k], parent[k])
            k = parent[k]
        return k

    first: dict[int, str] = {}
    for key, cluster in zip(keys, near):
        a, b = find(key), find(first.setdefault(cluster, key))
        if a != b:
            parent[max(a, b)] = min(a, b)
    merged = [find(k) for k in keys]
    label_of: dict[str, str] = {}
    for key, label in zip(merged, labels):
        label_of[key] = min(label_of.get(key, label), label)
    return merged, [label_of[k] for k in merged]


def split_records(
    records: Sequence[Record],
    ratios: Sequence[float],
    seed: int,
    previous: dict[str, str] | None = None,
    group_by: str = "observation",
    folds: int | None = None,
    fold: int = 0,
    near: Sequence[int] | None = None,
) -> list[str]:
    """The split of each record (same order). ``previous`` (path → split, from an earlier
    ``splits.csv``) pins the images it lists; only new groups are hashed.

    ``group_by="observation"`` stratifies by class (each class hashed on its own);
    ``"observer"`` hashes observers across classes (one observer's photos of any species stay
    in one split, so the split is only roughly stratified). ``folds`` switches to k-fold
    (:func:`assign_folds`). ``near`` (a near-duplicate cluster per record) joins the groups
    that share a cluster (:func:`units`); a joined unit pinned by ``previous`` follows the
    last of its pinned photos.
    """
    keys, labels = units(records, group_by, near)
    groups: dict[str, list[str]] = defaultdict(list)
    for key, label in zip(keys, labels):
        groups[label].append(key)
    if folds:
        by_group = assign_folds(groups, ratios[2], folds, fold, seed)
    else:
        by_group = assign_observations(groups, ratios, seed)
    if previous:
        for rec, key in zip(records, keys):  # a group follows its previously split photos
            if rec.path in previous:
                by_group[key] = previous[rec.path]
    return [by_group[key] for key in keys]


def write_splits(
    path: str | Path,
    records: Sequence[Record],
    splits: Sequence[str],
    moved: Sequence[bool] | None = None,
) -> None:
    """Write ``path,observation_id,taxon_name,split,moved`` rows (atomically); ``moved`` marks
    a record whose split is not the one its hash gives (see the module doc)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    moved = moved if moved is not None else [False] * len(records)
    with tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "observation_id", "taxon_name", "split", "moved"])
        for rec, split, m in zip(records, splits, moved):
            w.writerow([rec.path, rec.observation_id, rec.taxon_name, split, "yes" if m else ""])
    os.replace(tmp, path)


def read_splits(path: str | Path) -> dict[str, str]:
    """Read a ``splits.csv`` (saved by a spreadsheet too: a byte-order mark, ``Test`` or
    ``TEST`` for ``test``): image path → split. A missing ``path`` or ``split`` column, an empty
    path, a split that is none of :data:`SPLITS`, or one path in two splits is a ``ValueError``
    naming the file (row and column): an image the file meant to pin never lands in no split."""
    path = Path(path)
    found: dict[str, tuple[int, str]] = {}
    try:  # utf-8-sig: a byte-order mark is not part of the first column's name
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            reader.fieldnames = [(c or "").strip().lower() for c in reader.fieldnames or []]
            for column in ("path", "split"):
                if column not in reader.fieldnames:
                    raise ValueError(f"{path}: no {column!r} column (a splits.csv has path, split)")
            for row in reader:
                where = f"{path}: row {reader.line_num}"
                image, split = _split_row(row, where)
                line, before = found.setdefault(image, (reader.line_num, split))
                if before != split:
                    raise ValueError(
                        f"{where}, column split: {image!r} is {split} here, {before} at row {line}"
                    )
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    except csv.Error as e:
        raise ValueError(f"{path}: not a readable CSV: {e}") from None
    return {image: split for image, (_, split) in found.items()}


def _split_row(row: dict, where: str) -> tuple[str, str]:
    """A ``splits.csv`` row's image path (spelt as the manifest's paths are) and split (any
    case); a ``ValueError`` naming ``where`` and the column when either is not one."""
    image, split = (row.get("path") or "").strip(), (row.get("split") or "").strip()
    if not image:
        raise ValueError(f"{where}, column path: empty")
    if split.lower() not in SPLITS:
        raise ValueError(f"{where}, column split: {split!r} is not one of {', '.join(SPLITS)}")
    return Path(image).as_posix(), split.lower()


@dataclass
class SplitSpec:
    """How to split a dataset (the ``data.split`` config node).

    Args:
        ratios: (train, val, test) share of observations; must sum to 1.
        seed: seed of the observation hash; changes the whole assignment.
        file: an earlier ``splits.csv`` to reuse: the images it lists keep their split.
        group_by: ``observation`` (all photos of an individual in one split) or ``observer``
            (all photos of a person in one split: measures generalisation to new observers).
        folds: k-fold cross-validation with this many folds (``None``: the three-way split).
            The test split stays fixed (``ratios[2]`` of the groups); ``ratios[1]`` is unused.
        fold: which fold is the validation split, in ``[0, folds)``.
        near_duplicates: keep near-duplicate photos (re-uploads, re-encoded or resized copies:
            perceptual hashes within ``near_distance`` bits, the manifest's ``phash``; smooth
            photos alike in their low frequencies, its ``lowfreq``) in one split with their
            groups.
        near_distance: the most bits two hashes of one photo's copies differ by (0-63).
        near_cosine: the least cosine between two smooth photos' low frequencies to join them
            (in (0, 1]; ``None``: the hash alone).
    """

    ratios: Sequence[float] = (0.7, 0.15, 0.15)
    seed: int = 0
    file: str | None = None
    group_by: str = "observation"
    folds: int | None = None
    fold: int = 0
    near_duplicates: bool = True
    near_distance: int = DEFAULT_DISTANCE
    near_cosine: float | None = SMOOTH_COSINE

    def __post_init__(self) -> None:
        self.ratios = check_ratios(self.ratios)
        if self.file is not None and not Path(self.file).is_file():
            raise FileNotFoundError(f"file={self.file!r}: no such splits.csv")
        if self.group_by not in GROUP_BY:
            raise ValueError(f"group_by={self.group_by!r}: must be one of {GROUP_BY}")
        if self.folds is not None and self.folds < 2:
            raise ValueError(f"folds={self.folds}: must be >= 2 or null")
        if self.folds is not None and not 0 <= self.fold < self.folds:
            raise ValueError(f"fold={self.fold}: must be in [0, folds={self.folds})")
        if isinstance(self.near_distance, bool) or not 0 <= int(self.near_distance) < 64:
            raise ValueError(f"near_distance={self.near_distance!r}: must be in [0, 64)")
        if self.near_cosine is not None and not (
            isinstance(self.near_cosine, (int, float))
            and not isinstance(self.near_cosine, bool)
            and 0 < self.near_cosine <= 1
        ):
            raise ValueError(f"near_cosine={self.near_cosine!r}: must be in (0, 1] or null")

    def settings(self) -> dict[str, Any]:
        """What decides the assignment (not the file it pins from), for a model's card."""
        found = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "file"}
        return found | {"ratios": list(self.ratios)}

    @property
    def needed(self) -> int:
        """Groups a class needs to appear in every split."""
        if self.folds is None:
            return sum(1 for x in self.ratios if x > 0)
        return self.folds + (self.ratios[2] > 0)

    def near(
        self, records: Sequence[Record], grain: Callable[[int], Any] | None = None
    ) -> list[int] | None:
        """Each record's near-duplicate cluster (``None`` when turned off); smooth pairs are
        checked on the photos' ``grain`` (``grain(i)``: record ``i``'s) when given."""
        if not self.near_duplicates:
            return None
        lowfreq = None if self.near_cosine is None else [r.lowfreq for r in records]
        hashes = [r.phash for r in records]
        found = clusters(hashes, int(self.near_distance), lowfreq, self.near_cosine, grain)
        return found.tolist()

    def moved(
        self, records: Sequence[Record], splits: Sequence[str], near: Sequence[int] | None = None
    ) -> list[bool]:
        """For each record, whether its split differs from the one its hash alone gives (a
        small-class repair, or pinned by ``file``); k-fold splits deal groups: never moved."""
        if self.folds:
            return [False] * len(records)
        keys, labels = units(records, self.group_by, near)
        return [
            split != hashed_split(self.seed, label, key, self.ratios)
            for key, label, split in zip(keys, labels, splits)
        ]

    def assign(self, records: Sequence[Record], near: Sequence[int] | None = None) -> list[str]:
        """The split of each record, in order (``near``: from :meth:`near`)."""
        previous = read_splits(self.file) if self.file else None
        if previous is not None:
            listed = sum(r.path in previous for r in records)
            log.info("split.file: %d of %d images listed in %s", listed, len(records), self.file)
        return split_records(
            records, self.ratios, self.seed, previous, self.group_by, self.folds, self.fold, near
        )
