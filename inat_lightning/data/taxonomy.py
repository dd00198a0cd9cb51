"""Taxonomy: each class's lineage (genus, family, order…), stored once per taxon in ``taxa.csv``
beside the manifest, and the rank-level views of a confusion matrix built on it.

``taxa.csv`` has one row per taxon, keyed by ``taxon_id``:

=============  ===========================================================================
column         meaning
=============  ===========================================================================
taxon_id       iNaturalist taxon id (synthetic: the species index)
name           scientific name (the class label of the manifest)
rank           the taxon's own rank (``species``…)
ancestor_ids   iNaturalist ancestor ids, root first, ``/``-separated (empty when unknown)
kingdom … genus  the ancestor's name at each of :data:`RANKS` (empty when unknown)
=============  ===========================================================================

The scrape writes it from the API's ``/v1/taxa/<id>`` (one request per taxon); the synthetic
generator writes its own small taxonomy. A dataset without it is evaluated at species level.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TAXA_NAME = "taxa.csv"
#: the ranks recorded, highest first; metrics use the lowest ones (genus, family)
RANKS = ("kingdom", "phylum", "class", "order", "family", "genus")
#: the ranks at which accuracy is reported, lowest first
METRIC_RANKS = ("genus", "family")

#: a class's lineage: rank → name, for the ranks known
Lineage = dict[str, str]


@dataclass
class TaxonEntry:
    """One row of ``taxa.csv``."""

    taxon_id: str
    name: str
    rank: str = ""
    ancestor_ids: tuple[str, ...] = ()
    lineage: Lineage = field(default_factory=dict)

    def row(self) -> dict[str, str]:
        return {
            "taxon_id": self.taxon_id,
            "name": self.name,
            "rank": self.rank,
            "ancestor_ids": "/".join(self.ancestor_ids),
            **{r: self.lineage.get(r, "") for r in RANKS},
        }


def entry_from_api(taxon: Mapping) -> TaxonEntry:
    """A :class:`TaxonEntry` from an API v1 taxon (``/v1/taxa/<id>`` result: its ``ancestors``
    carry names and ranks; an observation's ``taxon`` has only ``ancestor_ids``)."""
    lineage = {
        a["rank"]: a["name"]
        for a in taxon.get("ancestors") or []
        if a.get("rank") in RANKS and a.get("name")
    }
    if taxon.get("rank") in RANKS:  # a genus-level class is its own genus
        lineage[taxon["rank"]] = taxon["name"]
    ids = taxon.get("ancestor_ids") or str(taxon.get("ancestry") or "").split("/")
    own = str(taxon["id"])
    return TaxonEntry(
        taxon_id=own,
        name=str(taxon["name"]),
        rank=str(taxon.get("rank") or ""),
        ancestor_ids=tuple(str(i) for i in ids if str(i) and str(i) != own),
        lineage=lineage,
    )


def read_taxa(path: str | Path) -> dict[str, TaxonEntry]:
    """``taxa.csv`` as taxon id → entry (empty when the file is absent)."""
    path = Path(path)
    if not path.is_file():
        return {}
    out = {}
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            out[row["taxon_id"]] = TaxonEntry(
                taxon_id=row["taxon_id"],
                name=row.get("name") or "",
                rank=row.get("rank") or "",
                ancestor_ids=tuple(i for i in (row.get("ancestor_ids") or "").split("/") if i),
                lineage={r: row[r] for r in RANKS if row.get(r)},
            )
    return out


def write_taxa(path: str | Path, entries: Iterable[TaxonEntry]) -> None:
    """Merge ``entries`` into ``taxa.csv`` (a newer entry replaces the row of its taxon id),
    atomically."""
    path = Path(path)
    merged = read_taxa(path) | {e.taxon_id: e for e in entries}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["taxon_id", "name", "rank", "ancestor_ids", *RANKS])
        w.writeheader()
        w.writerows(e.row() for e in sorted(merged.values(), key=lambda e: e.name))
    os.replace(tmp, path)


def load_lineages(root: str | Path, class_names: Sequence[str]) -> dict[str, Lineage] | None:
    """Class name → lineage for the classes that ``root/taxa.csv`` describes; ``None`` when it
    describes none of them (no taxonomy: species-level metrics only)."""
    by_name = {e.name: e.lineage for e in read_taxa(Path(root) / TAXA_NAME).values() if e.lineage}
    found = {c: dict(by_name[c]) for c in class_names if c in by_name}
    return found or None


class Taxonomy:
    """The lineages of a classifier's classes, in label order (see
    :func:`inat_lightning.models.confusion.rank_scalars` for what they say of a confusion). A
    class without a lineage shares no rank with any other."""

    def __init__(self, class_names: Sequence[str], lineages: Mapping[str, Lineage]) -> None:
        self.class_names = list(class_names)
        self.lineages = [dict(lineages.get(c) or {}) for c in self.class_names]

    @property
    def ranks(self) -> tuple[str, ...]:
        """The metric ranks that at least one class has."""
        return tuple(r for r in METRIC_RANKS if any(r in lin for lin in self.lineages))

    def group_ids(self, rank: str) -> np.ndarray:
        """Per class, an integer id of its ``rank`` ancestor (-1 when unknown): classes with the
        same id share that rank. ``O(K)``, where a ``K × K`` table would not fit at 40,000
        species."""
        ids: dict[str, int] = {}
        return np.array(
            [ids.setdefault(lin[rank], len(ids)) if lin.get(rank) else -1 for lin in self.lineages],
            dtype=np.int64,
        )

    def common_rank(self, i: int, j: int) -> str:
        """The lowest rank that classes ``i`` and ``j`` share (``genus``, ``family``…), or
        ``""`` when none is known."""
        a, b = self.lineages[i], self.lineages[j]
        for rank in reversed(RANKS):
            if a.get(rank) and a.get(rank) == b.get(rank):
                return rank
        return ""

    def order(self) -> list[int]:
        """Class indices sorted by lineage (order, family, genus, then name): related species
        side by side in a confusion matrix."""
        return sorted(
            range(len(self.class_names)),
            key=lambda i: (*(self.lineages[i].get(r, "~") for r in RANKS), self.class_names[i]),
        )

    def groups(self, order: Sequence[int], rank: str = "genus") -> list[tuple[int, int, str]]:
        """Runs of equal ``rank`` along ``order``: ``(start, end, name)``, end exclusive."""
        runs: list[tuple[int, int, str]] = []
        for pos, i in enumerate(order):
            name = self.lineages[i].get(rank, "")
            if runs and runs[-1][2] == name and name:
                runs[-1] = (runs[-1][0], pos + 1, name)
            else:
                runs.append((pos, pos + 1, name))
        return runs
