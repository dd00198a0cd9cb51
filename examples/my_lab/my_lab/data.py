"""The lab's data module: the project's ImageFolder module, keeping only photos of at least
``min_side`` pixels a side (the lab's old camera traps wrote thumbnails it never trains on)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PIL import Image

from inat_lightning.data.datamodule import ImageFolderDataModule
from inat_lightning.data.manifest import Record

log = logging.getLogger(__name__)


class LabBirds(ImageFolderDataModule):
    """:class:`~inat_lightning.data.datamodule.ImageFolderDataModule` with one rule of the lab's,
    by its one hook (:meth:`keep`).

    Args:
        min_side: photos whose shorter side is smaller are left out, before the split.
        **kwargs: the project's data module's arguments.
    """

    def __init__(self, min_side: int = 32, **kwargs: Any) -> None:
        if min_side < 1:
            raise ValueError(f"min_side={min_side}: must be >= 1")
        super().__init__(**kwargs)
        self.min_side = min_side

    def keep(self, records: list[Record]) -> list[Record]:
        kept = [r for r in records if self._big_enough(Path(self.root) / r.path)]
        log.info(
            "my_lab: LabBirds keeps %d of %d photos (at least %d px a side)",
            len(kept), len(records), self.min_side,
        )  # fmt: skip
        return kept

    def _big_enough(self, path: Path) -> bool:
        try:
            with Image.open(path) as photo:
                return min(photo.size) >= self.min_side
        except OSError:
            return True  # unreadable: the project reports and skips it
