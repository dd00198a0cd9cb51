"""iNaturalist API v1 client: resolve taxa, page observations with ``id_above``, parse photos.

Parsing is kept in pure functions (:func:`parse_observation`, :func:`pick_taxon`) so it is checked
against genuine API responses in the tests.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from inat_lightning.data.manifest import is_photo_id
from inat_lightning.data.taxonomy import TaxonEntry, entry_from_api
from inat_lightning.scrape.backend import PhotoItem, PhotoLister, Taxon, TaxonSource
from inat_lightning.scrape.http import HttpClient, RetryableError
from inat_lightning.validation import require

log = logging.getLogger(__name__)
SIZES = ("square", "small", "medium", "large", "original")
_SIZE_IN_URL = re.compile(r"/(square|thumb|small|medium|large|original)\.(\w+)(\?.*)?$")
_PHOTO_ID_IN_URL = re.compile(r"/photos/(\d+)/")
DEFAULT_LICENSES = (
    "cc0",
    "cc-by",
    "cc-by-sa",
    "cc-by-nc",
    "cc-by-nc-sa",
    "cc-by-nd",
    "cc-by-nc-nd",
)


def number_in(value: object, low: float, high: float) -> float | None:
    """A number within ``[low, high]``, else ``None`` (text, NaN, a bool…: not a coordinate)."""
    if isinstance(value, bool):
        return None
    try:
        found = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return found if low <= found <= high else None


def observation_place(obs: dict) -> dict[str, object]:
    """Where an observation was made, as the manifest keeps it: ``geojson`` (``[lon, lat]``)
    or ``location`` (``"lat,lon"``), ``positional_accuracy``, whether iNaturalist obscured the
    point (``obscured``, or a geoprivacy of ``obscured``/``private``) and ``captive``. A value
    that is not what the API documents is left empty, never an error."""
    lat = lon = None
    coords = (
        (obs.get("geojson") or {}).get("coordinates")
        if isinstance(obs.get("geojson"), dict)
        else None
    )
    if isinstance(coords, list) and len(coords) == 2:
        lon, lat = number_in(coords[0], -180, 180), number_in(coords[1], -90, 90)
    elif isinstance(obs.get("location"), str) and obs["location"].count(",") == 1:
        a, b = obs["location"].split(",")
        lat, lon = number_in(a, -90, 90), number_in(b, -180, 180)
    if lat is None or lon is None:
        lat = lon = None
    accuracy = obs.get("positional_accuracy")
    if accuracy is None:
        accuracy = obs.get("public_positional_accuracy")
    hidden = {"obscured", "private"}
    obscured = (
        obs.get("obscured") is True
        or obs.get("geoprivacy") in hidden
        or obs.get("taxon_geoprivacy") in hidden
    )
    captive = obs.get("captive")
    return {
        "latitude": lat,
        "longitude": lon,
        "pos_accuracy": number_in(accuracy, 0, math.inf),
        "coords_obscured": obscured if lat is not None else None,
        "captive": captive if isinstance(captive, bool) else None,
    }


class Malformed(NamedTuple):
    """A record a listing skipped because it is not what the API documents (an observation
    without a numeric id, ``photos`` that is not a list…): reported in ``failures.csv`` as
    ``malformed``, while the listing goes on."""

    what: str
    reason: str


def _is_id(value: object) -> bool:
    """An API id: an int, or ASCII digits (ids name files and folders)."""
    if isinstance(value, bool):
        return False
    return (isinstance(value, int) and value >= 0) or is_photo_id(value)


def observation_problem(obs: object) -> str | None:
    """Why an observation record cannot be used, or ``None`` when it can (its photos are
    checked one by one by :func:`photo_problem`)."""
    if not isinstance(obs, dict):
        return f"an observation that is a {type(obs).__name__}, not an object"
    if not _is_id(obs.get("id")):
        return f"observation id {obs.get('id')!r} is not a number"
    for key, kind in (("photos", list), ("user", dict)):
        if obs.get(key) is not None and not isinstance(obs[key], kind):
            return f"observation {obs['id']}: {key} is a {type(obs[key]).__name__}"
    for key in ("quality_grade", "observed_on"):
        if obs.get(key) is not None and not isinstance(obs[key], str):
            return f"observation {obs['id']}: {key} is not text"
    return None


def photo_problem(photo: object) -> str | None:
    """Why a photo record cannot be used, or ``None``."""
    if not isinstance(photo, dict):
        return f"a photo that is a {type(photo).__name__}, not an object"
    if not _is_id(photo.get("id")):  # it names a file: ASCII digits only
        return f"photo id {photo.get('id')!r} is not a number"
    if not isinstance(photo.get("url"), str) or not photo["url"]:
        return f"photo {photo['id']}: no url"
    for key in ("license_code", "attribution"):
        if photo.get(key) is not None and not isinstance(photo[key], str):
            return f"photo {photo['id']}: {key} is not text"
    return None


def sized_url(url: str, size: str) -> str:
    """Swap the size variant of a photo URL: ``.../square.jpg`` → ``.../medium.jpg``."""
    if size not in SIZES:
        raise ValueError(f"size={size!r}: must be one of {SIZES}")
    return _SIZE_IN_URL.sub(lambda m: f"/{size}.{m.group(2)}{m.group(3) or ''}", url)


def photo_id_from_url(url: str) -> str | None:
    m = _PHOTO_ID_IN_URL.search(url)
    return m.group(1) if m else None


def parse_observation(
    obs: dict, taxon: Taxon, size: str = "medium", licenses: Sequence[str] | None = None
) -> list[PhotoItem]:
    """The photos of one ``/v1/observations`` result, filtered by photo license (see
    :func:`parse_observation_checked`; malformed parts are left out)."""
    return [
        i for i in parse_observation_checked(obs, taxon, size, licenses) if isinstance(i, PhotoItem)
    ]


def parse_observation_checked(
    obs: object, taxon: Taxon, size: str = "medium", licenses: Sequence[str] | None = None
) -> list[PhotoItem | Malformed]:
    """The photos of one ``/v1/observations`` result, filtered by photo license, and a
    :class:`Malformed` for the record (or each photo) that is not what the API documents.

    Each photo carries its *own* license and attribution (not the observation's).
    ``licenses=None`` keeps every license, an empty license code means "all rights reserved"
    and is kept only then.
    """
    problem = observation_problem(obs)
    if problem:
        log.warning("%s: skipping a malformed observation: %s", taxon.name, problem)
        return [Malformed(f"{taxon.name}: observation", problem)]
    assert isinstance(obs, dict)
    wanted = None if licenses is None else {x.lower() for x in licenses}
    user = obs.get("user") or {}
    place = observation_place(obs)
    items: list[PhotoItem | Malformed] = []
    for photo in obs.get("photos") or []:
        problem = photo_problem(photo)
        if problem:
            log.warning("%s: skipping a malformed photo: %s", taxon.name, problem)
            items.append(Malformed(f"{taxon.name}: observation {obs['id']}", problem))
            continue
        url = photo["url"]
        code = (photo.get("license_code") or "").lower()
        if wanted is not None and code not in wanted:
            continue
        items.append(
            PhotoItem(
                photo_id=str(photo["id"]),
                observation_id=str(obs["id"]),
                taxon=taxon,
                url=sized_url(url, size),
                license=code,
                attribution=photo.get("attribution") or "",
                quality_grade=obs.get("quality_grade") or "",
                observer_id=str(user.get("id") or ""),
                observer=str(user.get("login") or ""),
                observed_on=str(obs.get("observed_on") or ""),
                **place,  # type: ignore[arg-type]
            )
        )
    return items


def taxon_problem(t: object) -> str | None:
    """Why a taxon record cannot be used, or ``None``."""
    if not isinstance(t, dict):
        return f"a taxon that is a {type(t).__name__}, not an object"
    if not _is_id(t.get("id")):
        return f"taxon id {t.get('id')!r} is not a number"
    if not isinstance(t.get("name"), str) or not t["name"].strip():
        return f"taxon {t['id']}: no name"
    for key in ("rank", "matched_term"):
        if t.get(key) is not None and not isinstance(t[key], str):
            return f"taxon {t['id']}: {key} is not text"
    return None


def taxon_of(t: object) -> Taxon:
    """A taxon record as a :class:`Taxon`; a malformed one is a ``LookupError`` saying why."""
    problem = taxon_problem(t)
    if problem:
        raise LookupError(f"malformed taxon record: {problem}")
    assert isinstance(t, dict)
    return Taxon(int(t["id"]), t["name"], t.get("rank") or "")


def pick_taxon(response: dict, query: str) -> Taxon:
    """The taxon a name means in a ``/v1/taxa?q=`` response: an exact (case-insensitive) match
    of its name or matched term, active taxa first; otherwise an error listing the candidates."""
    results = response.get("results") or []
    if not isinstance(results, list):
        raise LookupError(f"taxon {query!r}: the answer's results are not a list")
    results = [t for t in results if taxon_problem(t) is None]  # malformed candidates left out
    q = query.strip().lower()
    exact = [
        t
        for t in results
        if q in {(t.get("name") or "").lower(), (t.get("matched_term") or "").lower()}
    ]
    exact.sort(key=lambda t: not t.get("is_active", True))
    if exact:
        return taxon_of(exact[0])
    names = ", ".join(f"{t.get('name')} ({t.get('rank')})" for t in results[:8]) or "none"
    raise LookupError(f"taxon {query!r} not found on iNaturalist; candidates: {names}")


class INatAPI(TaxonSource):
    """The few API v1 endpoints a scrape needs.

    Args:
        client: the shared polite HTTP client (its rate limit covers these calls).
        base_url: API root, ``https://api.inaturalist.org/v1`` (tests point it at a fake server).
    """

    def __init__(
        self, client: HttpClient, base_url: str = "https://api.inaturalist.org/v1"
    ) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")

    def observations_by_id(self, ids: Sequence[str]) -> list[object]:
        """The records of the observations ``ids`` (digits; up to 200 per request)."""
        found: list[object] = []
        for start in range(0, len(ids), 200):
            part = ",".join(ids[start : start + 200])
            answer = self._get("observations", {"id": part, "per_page": 200}, listed=True)
            found += answer.get("results") or []
        return found

    def _get(self, path: str, params: dict | None = None, listed: bool = False) -> dict:
        """A JSON object from the API (with ``listed``: its ``results`` a list); anything else
        (a maintenance page with 200, a page of the wrong shape) is retried, then an
        :class:`HttpError`."""
        parsed: list[dict] = []

        def as_json(resp: object, body: bytes) -> None:
            try:
                value = json.loads(body)
            except ValueError as e:
                raise RetryableError(f"not JSON: {e}") from e
            if not isinstance(value, dict):
                raise RetryableError("not a JSON object")
            if listed and not isinstance(value.get("results", []), list | type(None)):
                raise RetryableError(f"results is a {type(value['results']).__name__}, not a list")
            parsed.append(value)

        self.client.get(f"{self.base_url}/{path.lstrip('/')}", params=params, accept=as_json)
        return parsed[-1]

    def resolve_taxon(self, name_or_id: str | int) -> Taxon:
        """A taxon from its id (``48662``) or scientific/common name (``"Danaus plexippus"``)."""
        text = str(name_or_id).strip()
        if text.isdigit():
            results = self._get(f"taxa/{text}").get("results") or []
            if not isinstance(results, list) or not results:
                raise LookupError(f"taxon id {text} not found on iNaturalist")
            return taxon_of(results[0])
        return pick_taxon(self._get("taxa", {"q": text, "per_page": 30}), text)

    def taxon_entry(self, taxon_id: int) -> TaxonEntry:
        """The taxon's lineage (names and ranks of its ancestors), from ``/v1/taxa/<id>``."""
        results = self._get(f"taxa/{taxon_id}").get("results") or []
        if not results:
            raise LookupError(f"taxon id {taxon_id} not found on iNaturalist")
        return entry_from_api(results[0])

    def iter_photos(
        self,
        taxon: Taxon,
        size: str = "medium",
        quality_grade: str | None = "research",
        licenses: Sequence[str] | None = DEFAULT_LICENSES,
        per_page: int = 200,
        max_pages: int = 10_000,
    ) -> Iterator[PhotoItem]:
        """Photos of a taxon's observations, oldest first, paged with ``id_above`` (page numbers
        stop at 10,000 results). Bounded by ``max_pages``."""
        last_id = 0
        for _ in range(max_pages):
            params = {
                "taxon_id": taxon.id,
                "photos": "true",
                "order_by": "id",
                "order": "asc",
                "id_above": last_id,
                "per_page": min(max(per_page, 1), 200),
            }
            if quality_grade:
                params["quality_grade"] = quality_grade
            if licenses:
                params["photo_license"] = ",".join(licenses)
            results = self._get("observations", params, listed=True).get("results") or []
            if not results:
                return
            for obs in results:
                yield from parse_observation_checked(obs, taxon, size, licenses)
            ids = [int(o["id"]) for o in results if observation_problem(o) is None]
            if not ids:  # nothing on the page to page on from: reported, the taxon ends here
                yield Malformed(f"{taxon.name}: page after id {last_id}", "no valid observation")
                return
            page_last = max(ids)
            if page_last <= last_id:  # not sorted by id: paging on would loop, stop here
                log.warning("observations not in ascending id order; stopping at id %d", last_id)
                return
            last_id = page_last


class ApiLister(PhotoLister):
    """Lists photos through the API (``scrape/backend=api``, the default: faster and kinder to
    the site than the browser).

    Args:
        api: the API client of the scrape (given at run time).
        per_page: results per request (API maximum: 200).
        max_pages: hard bound on requests per taxon.
    """

    def __init__(self, api: INatAPI, per_page: int = 200, max_pages: int = 10_000) -> None:
        rules = {
            "per_page": (1 <= per_page <= 200, "in [1, 200]"),
            "max_pages": (max_pages >= 1, ">= 1"),
        }
        require(rules, {"per_page": per_page, "max_pages": max_pages})
        self.api, self.per_page, self.max_pages = api, per_page, max_pages

    def iter_photos(
        self,
        taxon: Taxon,
        size: str = "medium",
        quality_grade: str | None = None,
        licenses: Sequence[str] | None = None,
    ) -> Iterator[PhotoItem]:
        yield from self.api.iter_photos(
            taxon, size, quality_grade, licenses, self.per_page, self.max_pages
        )
