"""What a scrape backend implements: the one module to read before writing one.

A backend is named by ``scrape/backend=<name>`` (``conf/scrape/backend/<name>.yaml``, a
``_target_`` node: a class in your own package works too) and built with the run's ``api``,
``client`` and ``out`` when its ``__init__`` asks for them. It subclasses :class:`PhotoLister`
and overrides :meth:`PhotoLister.iter_photos`; everything else has a default:

- :attr:`PhotoLister.tiles_only` — its items carry only a photo and its observation (a grid of
  thumbnails); the scrape asks the API for each observation's record (licence, attribution,
  place, captive) in chunks.
- :attr:`PhotoLister.media_rate` — photo requests per second from its own photo host (``None``:
  ``scrape.media_rate``).
- :meth:`PhotoLister.plan` — told every taxon of the scrape before the first listing (a backend
  that reads one big table selects them all in one pass).
- :meth:`PhotoLister.taxa` — where taxa are resolved and their lineage read: its own tables (a
  :class:`TaxonSource`, often itself), else ``None`` for the iNaturalist API.

What a lister yields is a :class:`PhotoItem`: one photo with everything the manifest records.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from inat_lightning.data.taxonomy import TaxonEntry
from inat_lightning.scrape.http import HttpError


@dataclass(frozen=True)
class Taxon:
    """A taxon as the scrape resolved it."""

    id: int
    name: str
    rank: str = ""


@dataclass(frozen=True)
class PhotoItem:
    """One photo to download, with everything the manifest records."""

    photo_id: str
    observation_id: str
    taxon: Taxon
    url: str
    license: str = ""
    attribution: str = ""
    quality_grade: str = ""
    observer_id: str = ""
    observer: str = ""
    observed_on: str = ""
    latitude: float | None = None
    longitude: float | None = None
    pos_accuracy: float | None = None
    coords_obscured: bool | None = None
    captive: bool | None = None


class TaxonSource:
    """Where taxa are resolved and their lineage read: the API, or a backend's own tables.
    Override :meth:`resolve_taxon` and :meth:`taxon_entry`; :meth:`resolve_many` when one pass
    can resolve many (a table read once)."""

    def resolve_taxon(self, name_or_id: str | int) -> Taxon:
        """A taxon from its id or name; ``LookupError`` saying why when there is none."""
        raise NotImplementedError

    def taxon_entry(self, taxon_id: int) -> TaxonEntry:
        """The taxon's lineage (names and ranks of its ancestors)."""
        raise NotImplementedError

    def resolve_many(self, names: Sequence[str]) -> dict[str, Taxon | Exception]:
        """Each name or id → its taxon, or the error that says why not."""
        out: dict[str, Taxon | Exception] = {}
        for name in names:
            try:
                out[name] = self.resolve_taxon(name)
            except (LookupError, HttpError) as e:
                out[name] = e
        return out


class PhotoLister:
    """Lists a taxon's photos. A context manager (a browser is closed on exit) that yields
    :class:`PhotoItem` until its list ends; the caller stops reading once it has enough."""

    #: items carry only a photo and its observation: the API fills in the rest
    tiles_only: bool = False
    #: photo requests per second from its own photo host (``None``: ``scrape.media_rate``)
    media_rate: float | None = None

    def iter_photos(
        self,
        taxon: Taxon,
        size: str = "medium",
        quality_grade: str | None = None,
        licenses: Sequence[str] | None = None,
    ) -> Iterator[PhotoItem]:
        """The taxon's photos at ``size``, of ``quality_grade`` and ``licenses`` (``None``:
        any), in a stable order (a re-run lists the same photos first)."""
        raise NotImplementedError

    def plan(
        self,
        taxa: Sequence[Taxon],
        size: str,
        quality_grade: str | None,
        licenses: Sequence[str] | None,
    ) -> None:
        """Told every taxon of the scrape before the first :meth:`iter_photos` (nothing by
        default)."""

    def taxa(self) -> TaxonSource | None:
        """Its own taxon tables, or ``None``: the iNaturalist API resolves them."""
        return None

    def __enter__(self) -> PhotoLister:
        return self

    def __exit__(self, *exc: object) -> None:
        return None
