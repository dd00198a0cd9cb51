"""What a callback wrote to disk at test time, through one method every such callback has
(:class:`SavesFiles`), so the analysis task gathers figures and galleries without knowing each
callback's class."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable


@dataclass
class SavedFiles:
    """Figures by name (``confusion_matrix``…) and Grad-CAM gallery files, of the last test."""

    figures: dict[str, Path] = field(default_factory=dict)
    galleries: list[Path] = field(default_factory=list)


@runtime_checkable
class SavesFiles(Protocol):
    def saved_files(self) -> SavedFiles:
        """The files written at the last test."""
        ...
