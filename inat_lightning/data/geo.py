"""Where and when a photo was taken, as the place prior's input
(:mod:`inat_lightning.models.prior`): a :class:`Place` per photo from the manifest, a user's
CSV or the photo's EXIF, and its encoding as features.

Coordinates iNaturalist obscured (``coords_obscured``: ~20 km off on purpose) are not trusted:
such a photo keeps its date, not its place. A photo with neither gets no prior (vision alone).
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from inat_lightning.data.manifest import checked_date, parse_date

log = logging.getLogger(__name__)

#: features per photo: place on the unit sphere (3) + known flag, season on the circle (2) + flag
FEATURES = 7
_GPS_IFD, _EXIF_IFD = 0x8825, 0x8769
_DATE_ORIGINAL, _DATE_TIME = 36867, 306


@dataclass(frozen=True, slots=True)
class Place:
    """A photo's place and season: latitude/longitude in degrees, day of the year (1–366);
    ``None`` where unknown."""

    latitude: float | None = None
    longitude: float | None = None
    day_of_year: int | None = None

    @property
    def located(self) -> bool:
        return self.latitude is not None and self.longitude is not None

    @property
    def known(self) -> bool:
        """Whether there is anything for the prior to use."""
        return self.located or self.day_of_year is not None

    @classmethod
    def of(cls, record: object) -> Place:
        """The place of a manifest record (obscured coordinates dropped, the date kept)."""
        obscured = bool(getattr(record, "coords_obscured", False))
        lat, lon = getattr(record, "latitude", None), getattr(record, "longitude", None)
        if obscured or lat is None or lon is None:
            lat = lon = None
        return cls(lat, lon, day_of_year(getattr(record, "observed_on", "") or ""))


def day_of_year(text: str) -> int | None:
    """The day of the year of a date (the one rule: :func:`~.manifest.parse_date`); ``None``
    for anything else, a date in the future included (EXIF is untrusted, never an error)."""
    try:
        date = parse_date(text)
    except ValueError:
        return None
    return date.timetuple().tm_yday if date else None


def encode(places: Sequence[Place]) -> np.ndarray:
    """``(N, FEATURES)`` float32: ``x, y, z`` of the place on the unit sphere (no seam at the
    date line or the poles), a located flag, ``sin, cos`` of the season (no seam at new year),
    a dated flag. Unknown parts are zeros with their flag 0."""
    out = np.zeros((len(places), FEATURES), dtype=np.float32)
    for i, p in enumerate(places):
        if p.located:
            lat, lon = math.radians(p.latitude), math.radians(p.longitude)  # type: ignore[arg-type]
            out[i, :4] = (
                math.cos(lat) * math.cos(lon),
                math.cos(lat) * math.sin(lon),
                math.sin(lat),
                1.0,
            )
        if p.day_of_year is not None:
            angle = 2 * math.pi * (p.day_of_year - 1) / 365.25
            out[i, 4:] = (math.sin(angle), math.cos(angle), 1.0)
    return out


def _degrees(value: object, ref: object, negative: str) -> float | None:
    """An EXIF GPS coordinate (degrees, minutes, seconds as rationals) in signed degrees."""
    try:
        d, m, s = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    found = d + m / 60 + s / 3600
    if not math.isfinite(found):
        return None
    return -found if str(ref).strip().upper() == negative else found


def exif_place(path: str | Path) -> Place:
    """The GPS position and date a photo's EXIF holds (an empty :class:`Place` when it holds
    none, or the file is not a readable image: EXIF is untrusted input and never an error)."""
    try:
        with Image.open(path) as img:
            exif = img.getexif()
            gps = exif.get_ifd(_GPS_IFD)
            taken = exif.get_ifd(_EXIF_IFD).get(_DATE_ORIGINAL) or exif.get(_DATE_TIME) or ""
    except Exception:  # noqa: BLE001 - a hostile file may raise anything while parsing
        return Place()
    lat = _degrees(gps.get(2), gps.get(1), "S")
    lon = _degrees(gps.get(4), gps.get(3), "W")
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        lat = lon = None
    return Place(lat, lon, day_of_year(str(taken)))


#: the names a places CSV may give each column (compared case-insensitively): this project's and
#: iNaturalist's, the short ones of mapping tools and spreadsheets, Darwin Core's (GBIF exports)
PLACE_COLUMNS = {
    "latitude": ("latitude", "lat", "decimallatitude"),
    "longitude": ("longitude", "lng", "lon", "long", "decimallongitude"),
    "observed_on": ("observed_on", "eventdate"),
}
#: how a places CSV names its photos: by path (relative to the inputs' root, or absolute), or id
KEY_COLUMNS = ("path", "photo_id")
#: unmatched rows named one by one in the log; the rest are counted
SHOWN_ROWS = 10


@dataclass(frozen=True)
class PlacesCsv:
    """A user's CSV of places as read (:func:`read_places`): the column its rows name photos by
    (``path`` or ``photo_id``) and each row's line number, photo and place."""

    path: Path
    key: str
    rows: list[tuple[int, str, Place]]

    def name(self, text: str, root: Path) -> str:
        """A row's photo as the inputs name it: a photo id as written; a path relative to the
        inputs' ``root`` (resolved), spelt as the inputs spell it (``./a.jpg`` is ``a.jpg``),
        an absolute one made relative when it lies under ``root``."""
        text = text.strip()
        if self.key != "path" or not text:
            return text
        given = Path(text).expanduser()
        if not given.is_absolute():
            return given.as_posix()
        given = given.parent.resolve() / given.name  # the folders as the root is: resolved
        return given.relative_to(root).as_posix() if given.is_relative_to(root) else str(given)

    def match(self, root: Path, records: Sequence[object]) -> list[Place | None]:
        """The place each record (a photo of the inputs, under ``root``) gets from this CSV
        (``None``: no row names it). Logs how many rows matched a photo and names the rows that
        match none; two rows naming one photo with different places are a ``ValueError`` naming
        both."""
        named = [(line, text, self.name(text, root), place) for line, text, place in self.rows]
        first: dict[str, tuple[int, Place]] = {}
        for line, _, name, place in named:
            seen = first.setdefault(name, (line, place))
            if seen[1] != place:
                raise ValueError(
                    f"{self.path}: rows {seen[0]} and {line} name {name!r}, with other places"
                )
        names = [str(getattr(r, self.key)) for r in records]
        wanted = set(names)
        unmatched = [(line, text) for line, text, name, _ in named if name not in wanted]
        self._report(len(self.rows) - len(unmatched), unmatched, names[:1])
        return [first[n][1] if n in first else None for n in names]

    def _report(self, matched: int, unmatched: list[tuple[int, str]], example: list[str]) -> None:
        """The count line, and a warning per unmatched row (the first :data:`SHOWN_ROWS`)."""
        count = f"places: {matched} of {len(self.rows)} rows matched a photo"
        if not unmatched:
            log.info(count)
            return
        like = f", like {example[0]!r}" if example else ""
        log.warning("%s (the inputs name their photos by %s%s)", count, self.key, like)
        for line, text in unmatched[:SHOWN_ROWS]:
            log.warning(
                "%s: row %d (%s %r) matches no photo of the inputs", self.path, line, self.key, text
            )
        if len(unmatched) > SHOWN_ROWS:
            log.warning("%s: %d more rows match no photo", self.path, len(unmatched) - SHOWN_ROWS)


def read_places(path: str | Path) -> PlacesCsv:
    """A user's CSV of places: a ``path`` or ``photo_id`` column, and ``latitude`` with
    ``longitude`` or ``observed_on`` or all three (each under any name of
    :data:`PLACE_COLUMNS`; any cell may be empty). A latitude without its longitude, a bad cell
    or a bad header is a ``ValueError`` naming the file (row and column)."""
    path = Path(path)
    rows = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = _place_columns(path, reader.fieldnames or [])
            key = columns["key"]
            for row in reader:
                where = f"{path}: row {reader.line_num}"
                rows.append((reader.line_num, row.get(key) or "", _row_place(row, columns, where)))
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{path}: not a readable CSV: {e}") from None
    return PlacesCsv(path, key.strip().lower(), rows)


def _place_columns(path: Path, header: Sequence[str]) -> dict[str, str | None]:
    """The header cell holding each field (``key``, then those of :data:`PLACE_COLUMNS`;
    ``None`` when absent). A ``ValueError`` naming the file when there is no key column, two
    columns name one field, a latitude has no longitude (or the reverse), or nothing is there
    to place a photo."""
    found: dict[str, str | None] = {}
    for field, names in {"key": KEY_COLUMNS, **PLACE_COLUMNS}.items():
        cells = [c for n in names for c in header if (c or "").strip().lower() == n]
        if len(cells) > 1 and field != "key":  # path and photo_id: the path is used
            raise ValueError(f"{path}: columns {cells[0]!r} and {cells[1]!r} both name the {field}")
        found[field] = cells[0] if cells else None
    if found["key"] is None:
        raise ValueError(f"{path}: needs a path or photo_id column")
    for field, other in (("latitude", "longitude"), ("longitude", "latitude")):
        if found[field] and not found[other]:
            raise ValueError(
                f"{path}: a {field} column ({found[field]!r}) but no {other} column "
                f"(one of {', '.join(PLACE_COLUMNS[other])})"
            )
    if not (found["latitude"] or found["observed_on"]):
        raise ValueError(
            f"{path}: no place or date column: latitude and longitude, or observed_on "
            f"(found {', '.join(map(repr, header))})"
        )
    unused = [c for c in header if c not in found.values()]
    if unused:
        log.info("%s: columns not read: %s", path, ", ".join(map(repr, unused)))
    return found


def _row_place(row: dict, columns: dict[str, str | None], where: str) -> Place:
    """A row's place: coordinates in range, both or neither, and a date by the one date rule."""
    lat = _number(row, columns["latitude"], 90.0, where)
    lon = _number(row, columns["longitude"], 180.0, where)
    if (lat is None) != (lon is None):
        empty, given = ("longitude", "latitude") if lon is None else ("latitude", "longitude")
        raise ValueError(f"{where}, column {columns[empty]}: empty, but the {given} is given")
    date = columns["observed_on"]
    found = checked_date(row.get(date) or "", where, date) if date else None
    return Place(lat, lon, found.timetuple().tm_yday if found else None)


def _number(row: dict, column: str | None, bound: float, where: str) -> float | None:
    text = (row.get(column) or "").strip() if column else ""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}, column {column}: {text!r} is not a number") from None
    if not -bound <= value <= bound:
        raise ValueError(f"{where}, column {column}: {text!r} is not in [-{bound}, {bound}]")
    return value
