"""A user's own data module, as it would live in their own package (``data._target_``)."""

from __future__ import annotations

from pathlib import Path

from inat_lightning.data.datamodule import ImageFolderDataModule


class OwnData(ImageFolderDataModule):
    """The project's data module under another name; ``built_marker`` (a file) is touched when
    it is built: a test sees whether a run folder's config built it."""

    def __init__(self, *args, built_marker: str | None = None, **kwargs) -> None:
        if built_marker:
            Path(built_marker).touch()
        super().__init__(*args, **kwargs)


class NotData:
    """Something named as a data module that is not one."""

    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs
