"""What the tasks (``train.py``, ``evaluate.py``, the callbacks) ask of a data module: the one
contract to read before writing your own.

:class:`~inat_lightning.data.datamodule.ImageFolderDataModule` is the project's. Your own (in
your own package, named by ``data._target_``) works in train, evaluate and predict when it is a
``LightningDataModule`` with the members of :class:`ClassifierData`. ``evaluate.py`` rebuilds a
run's data from its run folder only when the class it names is the project's or the one your own
command names (``data._target_``): a shared run folder never chooses which code runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
from torch.utils.data import Dataset

from inat_lightning.data.manifest import Record
from inat_lightning.data.spec import InputSpec
from inat_lightning.data.taxonomy import Lineage


class ClassifierData(Protocol):
    """A data module the classifier tasks can use; every member is read after ``setup``.

    Its datasets yield dicts with ``image`` (the input tensor), ``label`` (the class index) and
    ``index`` (the photo's position in ``records[stage]``); an unreadable photo yields ``None``
    (reported and skipped by the loaders' collate)."""

    #: class names in index order (the model's head)
    class_names: list[str]
    #: class name → lineage (rank → name), or ``None`` without a taxonomy
    lineages: dict[str, Lineage] | None
    #: ``train``/``val``/``test`` → the dataset of that split
    datasets: dict[str, Dataset]
    #: ``train``/``val``/``test`` → the records of that split, in the dataset's order
    records: dict[str, list[Record]]
    batch_size: int
    num_workers: int
    #: the folder the records' paths are relative to, and the largest photo read (pixels):
    #: the bias audit and the near-duplicate picture read photos from there
    root: Path
    max_pixels: int

    def setup(self, stage: str | None = None) -> None: ...

    @property
    def num_classes(self) -> int: ...

    @property
    def class_counts(self) -> torch.Tensor:
        """Training photos per class."""
        ...

    @property
    def class_weights(self) -> torch.Tensor | None:
        """Per-class loss weights, or ``None`` for uniform."""
        ...

    def input_spec(self) -> InputSpec:
        """How evaluation inputs are made: the checkpoint keeps it and predicts with it
        alone."""
        ...

    def fingerprint(self) -> dict[str, Any]:
        """What a model trained here learned from (for its checkpoint and model card)."""
        ...

    def near_duplicate_summary(self) -> dict[str, Any] | None:
        """The near-duplicate clusters the split kept whole (``None``: not looked for)."""
        ...


#: the members :func:`check_data_module` looks for
MEMBERS = (
    "class_names",
    "lineages",
    "datasets",
    "records",
    "batch_size",
    "num_workers",
    "root",
    "max_pixels",
    "setup",
    "num_classes",
    "class_counts",
    "class_weights",
    "input_spec",
    "fingerprint",
    "near_duplicate_summary",
)


def check_data_module(datamodule: Any, key: str = "data") -> ClassifierData:
    """``datamodule`` if it has every member of :class:`ClassifierData` (on its class or set by
    its ``__init__``; none is called), else one line naming what it lacks."""
    own = getattr(datamodule, "__dict__", {})
    missing = [m for m in MEMBERS if not (hasattr(type(datamodule), m) or m in own)]
    if missing:
        raise ValueError(
            f"{key}: {type(datamodule).__name__} is not a classifier data module: it lacks "
            f"{', '.join(missing)} (see inat_lightning/data/protocol.py)"
        )
    return datamodule
