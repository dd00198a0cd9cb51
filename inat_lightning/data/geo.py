"""Where and when a photo was taken, as the place prior's input
(:mod:`inat_lightning.models.prior`): a :class:`Place` per photo from the manifest, a user's
CSV or the photo's EXIF, and its encoding as features.

Coordinates iNaturalist obscured (``coords_obscured``: ~20 km off on purpose) are not trusted:
such a photo keeps its date, not its place. A photo with neither gets no prior (vision alone).
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

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
    """The day of the year of a date (``YYYY-MM-DD``, optionally followed by a time; EXIF's
    ``YYYY:MM:DD``); ``None`` for anything else."""
    head = text.strip()[:10].replace(":", "-")
    try:
        return dt.date.fromisoformat(head).timetuple().tm_yday if len(head) == 10 else None
    except ValueError:
        return None


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


def read_places(path: str | Path) -> dict[str, Place]:
    """A user's CSV of places: a ``path`` (relative to the inputs' root) or ``photo_id``
    column, ``latitude``, ``longitude`` and ``observed_on`` (any may be empty). A bad cell is a
    ``ValueError`` naming the file, row and column."""
    path = Path(path)
    found: dict[str, Place] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            names = set(reader.fieldnames or [])
            key = "path" if "path" in names else "photo_id" if "photo_id" in names else None
            if key is None:
                raise ValueError(f"{path}: needs a path or photo_id column")
            for row in reader:
                where = f"{path}: row {reader.line_num}"
                lat = _number(row, "latitude", 90.0, where)
                lon = _number(row, "longitude", 180.0, where)
                date = (row.get("observed_on") or "").strip()
                day = day_of_year(date)
                if date and day is None:
                    raise ValueError(f"{where}, column observed_on: {date!r} is not a date")
                found[(row.get(key) or "").strip()] = Place(lat, lon, day)
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{path}: not a readable CSV: {e}") from None
    return found


def _number(row: dict, column: str, bound: float, where: str) -> float | None:
    text = (row.get(column) or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}, column {column}: {text!r} is not a number") from None
    if not -bound <= value <= bound:
        raise ValueError(f"{where}, column {column}: {text!r} is not in [-{bound}, {bound}]")
    return value
