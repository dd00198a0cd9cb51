"""The one manifest schema that links the stages (scrape → data → train → analyse).

A manifest is a CSV file, ``<root>/manifest.csv``, one row per image:

================  ==========================================================================
column            meaning
================  ==========================================================================
photo_id          iNaturalist photo id (synthetic: ``syn-<n>``); unique per row
observation_id    the observation (one individual) the photo belongs to; the split groups by it
taxon_id          iNaturalist taxon id (synthetic: the species index)
taxon_name        scientific name; this is the class label
path              image path relative to the root, ``<folder>/<photo_id>.jpg``
license           photo license code (``cc-by``, ``cc-by-nc``…); empty when unknown
attribution       photo attribution string; empty when unknown
url               source URL of the photo; empty for generated images
sha256            hex digest of the file bytes
width, height     image size in pixels
quality_grade     iNaturalist quality grade (``research``, ``needs_id``…); empty when unknown
cue_x0 … cue_y1   optional bounding box (pixels) of a spurious cue object; empty when absent
observer_id       the observer's user id; ``data.split.group_by=observer`` groups by it
observer          the observer's login name; empty when unknown
observed_on       date of the observation (``YYYY-MM-DD``); empty when unknown (a date that is
                  malformed or after tomorrow is refused: :func:`parse_date`)
cue_label         what the cue box holds (``person``, ``hand``…); ``+``-joined when merged
cue_source        where the box comes from: ``csv:<file>``, ``coco:<file>``, a detector's name
cue_score         the detector's score (empty for imported and generated boxes)
phash             64-bit perceptual hash of the pixels, 16 hex digits (near-duplicate clusters)
lowfreq           mean, contrast and 15 lowest DCT frequencies of the thumbnail, 34 hex digits
                  (near-duplicates of smooth photos, whose ``phash`` is unstable)
latitude          where the observation was made, decimal degrees (WGS84); empty when unknown
longitude         decimal degrees in [-180, 180]; empty when unknown
pos_accuracy      positional accuracy, metres (iNaturalist's ``positional_accuracy``)
coords_obscured   ``true`` when iNaturalist obscured the coordinates (geoprivacy, threatened
                  taxon): they are ~20 km off, marked and not trusted by the place prior
captive           ``true`` for captive or cultivated organisms (a zoo, a garden); the scrape
                  leaves them out by default
================  ==========================================================================

Other columns (a user's notes) are the user's data: they are read into ``Record.extra`` and
written back unchanged.

A plain ImageFolder tree without a manifest also works: :func:`scan_image_folder` builds the same
records, each image being its own observation. Each taxon's lineage is stored once, in
``taxa.csv`` beside the manifest (see :mod:`inat_lightning.data.taxonomy`).
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import logging
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

log = logging.getLogger(__name__)
MANIFEST_NAME = "manifest.csv"
#: photos whose header announces more pixels are skipped, not decoded (decompression bombs);
#: iNaturalist originals are at most 2048 px on a side
DEFAULT_MAX_PIXELS = 40_000_000
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass(slots=True)
class Record:
    """One image of the dataset, as written in the manifest (slots: millions fit in memory)."""

    photo_id: str
    observation_id: str
    taxon_id: str
    taxon_name: str
    path: str
    license: str = ""
    attribution: str = ""
    url: str = ""
    sha256: str = ""
    width: int | None = None
    height: int | None = None
    quality_grade: str = ""
    cue_x0: float | None = None
    cue_y0: float | None = None
    cue_x1: float | None = None
    cue_y1: float | None = None
    observer_id: str = ""
    observer: str = ""
    observed_on: str = ""
    cue_label: str = ""
    cue_source: str = ""
    cue_score: float | None = None
    phash: str = ""  # 64-bit perceptual hash, 16 hex digits (data/near_duplicates.py)
    lowfreq: str = ""  # low frequencies of the thumbnail, 34 hex digits (same module)
    latitude: float | None = None
    longitude: float | None = None
    pos_accuracy: float | None = None
    coords_obscured: bool | None = None
    captive: bool | None = None
    extra: dict[str, str] | None = None  # columns this project does not know, kept as read

    def row(self) -> dict[str, object]:
        """The CSV row: known columns (empty for ``None``) and the extra ones."""
        known = {c: _cell(getattr(self, c)) for c in COLUMNS}
        return {**known, **(self.extra or {})}

    @property
    def cue_box(self) -> tuple[float, float, float, float] | None:
        """The spurious-cue box ``(x0, y0, x1, y1)`` in pixels, or ``None``."""
        box = (self.cue_x0, self.cue_y0, self.cue_x1, self.cue_y1)
        return None if any(v is None for v in box) else box  # type: ignore[return-value]


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Record) if f.name != "extra")
_INT_COLUMNS = {"width", "height"}
_HEX = {"phash": re.compile(r"[0-9a-f]{16}"), "lowfreq": re.compile(r"[0-9a-f]{34}")}
#: number columns and the closed range a value must fall in
_FLOAT_COLUMNS = {
    **dict.fromkeys(("cue_x0", "cue_y0", "cue_x1", "cue_y1", "cue_score"), (-math.inf, math.inf)),
    "latitude": (-90.0, 90.0),
    "longitude": (-180.0, 180.0),
    "pos_accuracy": (0.0, math.inf),
}
_BOOL_COLUMNS = {"coords_obscured", "captive"}
_BOOLS = {"true": True, "false": False, "1": True, "0": False, "": None}


def _cell(value: object) -> object:
    """A value as written: empty for ``None``, ``true``/``false`` for booleans."""
    if value is None:
        return ""
    return str(value).lower() if isinstance(value, bool) else value


def _parse(column: str, value: str, where: str) -> object:
    """A cell as its column's type; a bad one is a ``ValueError`` naming file, row and column."""
    try:
        if column in _INT_COLUMNS:
            return int(value) if value else None
        number = float(value) if column in _FLOAT_COLUMNS and value else None
    except ValueError:
        kind = "an integer" if column in _INT_COLUMNS else "a number"
        raise ValueError(f"{where}, column {column}: {value!r} is not {kind}") from None
    if column in _FLOAT_COLUMNS:
        low, high = _FLOAT_COLUMNS[column]
        if number is not None and not low <= number <= high:  # NaN fails too
            raise ValueError(f"{where}, column {column}: {value!r} is not in [{low}, {high}]")
        return number
    if column in _BOOL_COLUMNS:
        if value.strip().lower() not in _BOOLS:
            raise ValueError(f"{where}, column {column}: {value!r} is not true or false")
        return _BOOLS[value.strip().lower()]
    if column in _HEX and value and not _HEX[column].fullmatch(value):
        digits = _HEX[column].pattern.split("{")[1].rstrip("}")
        raise ValueError(f"{where}, column {column}: {value!r} is not {digits} hex digits")
    if column == "observed_on":
        checked_date(value, where, column)
    return value


def parse_date(text: str) -> dt.date | None:
    """The date a cell gives: ``YYYY-MM-DD`` (iNaturalist's ``observed_on``), optionally
    followed by a time (``T…`` or a space), or EXIF's ``YYYY:MM:DD``; ``None`` when empty.
    Anything else is a ``ValueError`` saying why, and so is a date after tomorrow (no photo is
    taken in the future; a day's slack for time zones). The one date rule of the manifest, a
    places CSV, the scrape and EXIF."""
    text = text.strip()
    if not text:
        return None
    head, rest = text[:10].replace(":", "-"), text[10:]
    try:
        if len(head) != 10 or rest[:1] not in ("", "T", " "):
            raise ValueError
        date = dt.datetime.fromisoformat(head + rest).date()  # a time, if any, must be one
    except ValueError:
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD)") from None
    latest = dt.date.today() + dt.timedelta(days=1)
    if date > latest:
        raise ValueError(f"{text!r} is in the future (after {latest})")
    return date


def checked_date(text: str, where: str, column: str) -> dt.date | None:
    """:func:`parse_date`, a bad date being a ``ValueError`` naming ``where`` (file and row) and
    the column."""
    try:
        return parse_date(text)
    except ValueError as e:
        raise ValueError(f"{where}, column {column}: {e}") from None


def date_or_empty(text: str) -> str:
    """``text`` when it is a date (:func:`parse_date`), else empty: an untrusted source's (the
    API's) bad date is no date, never an error, and never a manifest cell that is refused."""
    try:
        parse_date(text)
    except ValueError:
        return ""
    return text


def record_of(row: dict[str, str], where: str) -> Record:
    """The record a manifest row (column → text) describes, each cell checked by its column's
    rule (a bad one is a ``ValueError`` naming ``where`` and the column); unknown columns go to
    ``Record.extra``. The one reading of a row: the manifest's and a shard index's."""
    extra = {k: v for k, v in row.items() if k not in COLUMNS}
    known = {c: _parse(c, row.get(c) or "", where) for c in COLUMNS}
    return Record(**known, extra=extra or None)


def read_manifest(path: str | Path, skip_incomplete: bool = False) -> list[Record]:
    """Read a manifest CSV; unknown columns go to ``Record.extra``, missing optional ones are
    empty.

    A row with fewer or more cells than the header (a line torn by a crash) is an error, or is
    skipped with a warning when ``skip_incomplete``.
    """
    path = Path(path)
    records = []
    try:  # utf-8-sig: a manifest saved by a spreadsheet starts with a byte-order mark
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = {"photo_id", "observation_id", "taxon_name", "path"} - set(
                reader.fieldnames or []
            )
            if missing:
                raise ValueError(f"{path}: manifest lacks required columns {sorted(missing)}")
            for row in reader:
                if None in row or None in row.values():
                    if not skip_incomplete:
                        raise ValueError(f"{path}: line {reader.line_num} is incomplete")
                    log.warning("%s: skipping incomplete line %d", path, reader.line_num)
                    continue
                records.append(record_of(row, f"{path}: row {reader.line_num}"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    except csv.Error as e:
        raise ValueError(f"{path}: not a readable CSV: {e}") from None
    return records


def header_of(records: Iterable[Record]) -> list[str]:
    """The known columns, then every extra column in the order first seen."""
    extra = dict.fromkeys(k for r in records for k in (r.extra or {}))
    return [*COLUMNS, *extra]


def write_manifest(path: str | Path, records: Iterable[Record]) -> None:
    """Write records atomically (a temporary file, synced to disk, then renamed), so a crash
    never leaves half a file; extra columns are written back."""
    path = Path(path)
    records = list(records)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header_of(records), restval="")
        writer.writeheader()
        writer.writerows(r.row() for r in records)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_UNSAFE = re.compile(r"[^\w\- .()]+", re.UNICODE)


def is_photo_id(text: object) -> bool:
    """A photo id names a file: ASCII digits only (``str.isdigit`` also takes "²³" and "٣٤")."""
    return isinstance(text, str) and text.isascii() and text.isdigit()


def safe_folder_name(name: str) -> str:
    """A readable, filesystem-safe folder name for a taxon: no separators, no traversal.

    ``"Danaus plexippus"`` stays as is; ``"../x/y"`` becomes ``"x_y"``.
    """
    cleaned = _UNSAFE.sub("_", name.replace(os.sep, "_").replace("/", "_")).strip(" ._")
    return cleaned[:120] or "unnamed"


def link_out_of(root: Path, path: Path) -> Path | None:
    """Where ``path`` leads when it is a symlink out of ``root`` (resolved), else ``None``."""
    if not path.is_symlink():
        return None
    target = path.resolve()
    return None if target.is_relative_to(root) else target


def scan_image_folder(root: str | Path) -> list[Record]:
    """Records for a plain ``root/<class>/<image>`` tree: the class is the folder name and every
    image is its own observation. Hidden files and non-image files are ignored. A class folder
    that is a symlink out of the root (to another disk) is a ``ValueError`` naming it and its
    target: images are read only inside the root, and a shared dataset can plant a folder
    symlink as easily as a file one."""
    root = Path(root)
    records: list[Record] = []
    with os.scandir(root) as classes:
        class_dirs = sorted(e.name for e in classes if e.is_dir() and not e.name.startswith("."))
    real_root = root.resolve()
    for name in class_dirs:
        target = link_out_of(real_root, root / name)
        if target is not None:
            raise ValueError(
                f"{root / name}: a class folder symlinked to {target}, outside the dataset root: "
                "refused (images are read only inside the root: move, copy or bind-mount the "
                "folder into it)"
            )
    for taxon_index, name in enumerate(class_dirs):
        with os.scandir(root / name) as files:
            images = sorted(
                e.name
                for e in files
                if not e.name.startswith(".") and e.name.lower().endswith(IMAGE_EXTENSIONS)
            )
        for file_name in images:
            rel = f"{name}/{file_name}"
            records.append(
                Record(
                    photo_id=rel,
                    observation_id=rel,
                    taxon_id=str(taxon_index),
                    taxon_name=name,
                    path=rel,
                )
            )
    return records


def check_relative(path: str, where: str) -> None:
    """A manifest path must be relative and stay below the root (no ``..``, not absolute);
    symlinks are followed and checked when the image is read."""
    parts = Path(path).parts
    if not path or Path(path).is_absolute() or ".." in parts:
        raise ValueError(f"{where}: path {path!r} leaves the dataset root")


def _identity(root: Path, path: str) -> tuple[int, int] | None:
    """The file a path names (device, inode: symlinks followed, hard links alike), ``None``
    when it is missing."""
    try:
        st = os.stat(root / path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def unique_records(
    records: list[Record], where: str, files: list[tuple[int, int] | None] | None = None
) -> list[Record]:
    """One record per photo: rows with the same ``photo_id``, the same path, the same file
    (``files[i]``, the identity of record i's file: a symlink or hard link) or the same
    ``sha256`` are one photo, the last row winning (a later row supersedes: a photo fetched
    again); a photo counted twice would weigh twice and could sit in two splits. A warning says
    how many rows were dropped."""
    seen: set[object] = set()
    kept = []
    for i in reversed(range(len(records))):
        r = records[i]
        keys: list[object] = [("id", r.photo_id), ("path", r.path)]
        if r.sha256:
            keys.append(("sha256", r.sha256))
        if files is not None and files[i] is not None:
            keys.append(("file", files[i]))
        if any(k in seen for k in keys):
            continue
        seen.update(keys)
        kept.append(r)
    kept.reverse()
    if len(kept) < len(records):
        log.warning(
            "%s: %d duplicate rows (the same photo_id, path, file or sha256) ignored; the last "
            "of each is kept",
            where,
            len(records) - len(kept),
        )
    return kept


def check_missing(
    records: list[Record], files: list[tuple[int, int] | None], where: str, max_missing: float
) -> None:
    """Up to ``max_missing`` of the records may name a missing file (``files[i] is None``): one
    warning line; more is a ``ValueError`` saying how many and showing the first few, so a
    manifest that does not describe its folder never trains to a meaningless score."""
    missing = [r.path for r, f in zip(records, files) if f is None]
    if not missing:
        return
    share = len(missing) / len(records)
    shown = ", ".join(missing[:5])
    if share > max_missing:
        raise ValueError(
            f"{where}: {len(missing)} of {len(records)} rows ({share:.1%}) name missing files, "
            f"more than max_missing={max_missing:g}; first: {shown}"
        )
    log.warning(
        "%s: %d of %d rows name missing files, left out (first: %s)",
        where,
        len(missing),
        len(records),
        shown,
    )


def load_records(root: str | Path, max_missing: float = 0.05) -> list[Record]:
    """The records of a dataset root: its manifest when present (rows checked to stay inside
    the root, paths normalised, one row per photo, missing files within ``max_missing`` and
    left out), else a folder scan; either way one record per file."""
    root = Path(root)
    manifest = root / MANIFEST_NAME
    if not manifest.is_file():
        records = scan_image_folder(root)
        return unique_records(records, str(root), [_identity(root, r.path) for r in records])
    records = read_manifest(manifest)
    for line, r in enumerate(records, start=2):
        check_relative(r.path, f"{manifest}: row {line} (photo_id {r.photo_id})")
        r.path = Path(r.path).as_posix()  # one spelling: a/./x.jpg and a//x.jpg are a/x.jpg
    files = [_identity(root, r.path) for r in records]  # one stat per row
    check_missing(records, files, str(manifest), max_missing)
    present = [i for i, f in enumerate(files) if f is not None]
    records, files = [records[i] for i in present], [files[i] for i in present]
    return unique_records(records, str(manifest), files)
