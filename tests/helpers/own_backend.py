"""A user's own scrape backends, as they would live in their own package."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import islice

from inat_lightning.scrape.backend import PhotoItem, PhotoLister, Taxon
from inat_lightning.scrape.inat_api import INatAPI


class FirstPhotos(PhotoLister):
    """The API's listing, cut to its first ``keep`` photos per taxon (only ``iter_photos``
    implemented: everything else is the contract's default)."""

    def __init__(self, api: INatAPI, keep: int = 2) -> None:
        self.api, self.keep = api, keep

    def iter_photos(
        self,
        taxon: Taxon,
        size: str = "medium",
        quality_grade: str | None = None,
        licenses: Sequence[str] | None = None,
    ) -> Iterator[PhotoItem]:
        yield from islice(self.api.iter_photos(taxon, size, quality_grade, licenses), self.keep)


class NotALister:
    """Named as a backend, but not one."""

    def __init__(self, api: INatAPI) -> None:
        self.api = api
