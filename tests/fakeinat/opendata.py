"""A miniature iNaturalist open-data export, in the real layout (four gzipped tab-separated
tables, a header row, no quoting), made from a :class:`FakeINat`'s observations so that its
server can serve both the tables (``/opendata/<table>.csv.gz``) and the photos.

Hostile on purpose, like the real export: a quote character inside fields (a taxon name, an
observer's name), a subspecies whose observations count for its species, an inactive taxon
with the same name as an active one (listed first), an observation on an inactive descendant
(not selected), all-rights-reserved photos, needs-id observations, an anomaly score column the
reader must ignore, a photo row with a non-numeric id, and a torn line.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field

from inat_lightning.scrape.opendata import LAYOUT
from tests.fakeinat.server import FakeINat

LIFE = 48460
SUBSPECIES, INACTIVE_TWIN, INACTIVE_CHILD, QUOTED = 2000, 3000, 2001, 4000


def obs_uuid(obs_id: int) -> str:
    return f"00000000-0000-4000-8000-{obs_id:012d}"


def licence_text(code: str | None) -> str:
    """The export's spelling: ``cc-by-nc`` → ``CC-BY-NC``; all rights reserved is empty."""
    return (code or "").upper()


@dataclass
class Dump:
    """The four tables (gzipped bytes by file name) and what a correct reader must find."""

    files: dict[str, bytes] = field(default_factory=dict)
    taxon_of_obs: dict[int, int] = field(default_factory=dict)  # fake obs id → dump taxon id

    def expected(self, fake: FakeINat, licences: set[str], grade: str = "research") -> dict:
        """photo id → taxon index for the photos selected with ``licences`` and ``grade``: an
        observation counts for species k when its taxon is k or k's active descendant."""
        counts_for = {1000 + k: k for k in range(fake.num_taxa)} | {SUBSPECIES: 0}
        return {
            p: counts_for[self.taxon_of_obs[o.id]]
            for o in fake.observations
            if self.taxon_of_obs[o.id] in counts_for and o.quality_grade == grade
            for p in o.photo_ids
            if fake.photo_license(p) in licences
        }


def _gz(table: str, rows: list[list[object]], torn: str = "") -> bytes:
    """A table of the export, gzipped: its real header (``opendata.LAYOUT``), the rows, and
    optionally a torn last line."""
    lines = ["\t".join(LAYOUT[table])] + ["\t".join(str(c) for c in r) for r in rows]
    text = "\n".join(lines) + "\n" + (torn + "\n" if torn else "")
    return gzip.compress(text.encode("utf-8"), compresslevel=1)


def make_dump(fake: FakeINat) -> Dump:
    """The export of ``fake``'s world (taxa with lineage, observations, photos, observers)."""
    dump = Dump()
    taxa: list[list[object]] = [[LIFE, "", 100, "stateofmatter", "Life", "true"]]
    species_ancestry = {}
    for t in fake.taxa:
        chain = [LIFE]
        for a in fake.ancestors[t["id"]]:
            if a["id"] not in {row[0] for row in taxa}:
                taxa.append([a["id"], "/".join(map(str, chain)), 50, a["rank"], a["name"], "true"])
            chain.append(a["id"])
        species_ancestry[t["id"]] = "/".join(map(str, chain))
    first = fake.taxa[0]
    twin = fake.taxa[1]
    taxa.append(  # an inactive taxon named like an active one, listed before it
        [INACTIVE_TWIN, species_ancestry[twin["id"]], 10, "species", twin["name"], "false"]
    )
    for t in fake.taxa:
        taxa.append([t["id"], species_ancestry[t["id"]], 10, "species", t["name"], "true"])
    below_first = f"{species_ancestry[first['id']]}/{first['id']}"
    taxa += [
        [SUBSPECIES, below_first, 5, "subspecies", f"{first['name']} minor", "true"],
        [INACTIVE_CHILD, below_first, 5, "subspecies", f"{first['name']} vetus", "false"],
        [QUOTED, str(LIFE), 10, "species", "Aus \"quoted' beta", "true"],
    ]
    dump.files["taxa.csv.gz"] = _gz("taxa", taxa)

    of_first = [
        o for o in fake.observations if o.taxon_index == 0 and o.quality_grade == "research"
    ]
    moved = {of_first[0].id: SUBSPECIES, of_first[1].id: INACTIVE_CHILD}
    observations, photos = [], []
    for o in fake.observations:
        taxon = moved.get(o.id, 1000 + o.taxon_index)
        dump.taxon_of_obs[o.id] = taxon
        user = fake.observation_json(o)["user"]
        observations.append(
            [
                obs_uuid(o.id),
                user["id"],
                *(fake.place(o) if o.id % 6 != 2 else ("", "")),
                10 if o.id % 4 else "",
                taxon,
                o.quality_grade,
                fake.observation_json(o)["observed_on"],
                0.93,
            ]
        )
        for position, p in enumerate(o.photo_ids):
            photos.append(
                [
                    f"10000000-0000-4000-8000-{p:012d}",
                    p,
                    obs_uuid(o.id),
                    user["id"],
                    "jpg",
                    licence_text(fake.photo_license(p)),
                    96,
                    96,
                    position,
                ]
            )
    photos.append(  # a row whose photo id is not a number (it would name a file)
        ["bad", "../x", obs_uuid(of_first[2].id), 700, "jpg", "CC-BY", 1, 1, 9]
    )
    dump.files["observations.csv.gz"] = _gz("observations", observations, "00000000-torn\t700")
    dump.files["photos.csv.gz"] = _gz("photos", photos)
    observers = [
        [700 + n, f"observer{n}", f"Person {n}" if n else 'Seán O"Brien'] for n in range(13)
    ]
    observers.append([999, "nobody", ""])
    dump.files["observers.csv.gz"] = _gz("observers", observers)
    return dump
