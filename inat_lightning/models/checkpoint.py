"""Reading checkpoints and weight files that may come from someone else: tensors and plain
values only (``torch.load(weights_only=True)``: nothing in the file can run code), with errors
that name the config key instead of a raw unpickling or zip error."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from inat_lightning.config import ConfigError
from inat_lightning.models.backbones import load_tensors
from inat_lightning.models.classifier import Classifier, checked_temperature
from inat_lightning.models.spec import InputSpec, resolve_spec


def read_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """A Lightning checkpoint of this project as a dict; a missing, truncated, foreign or
    code-carrying file is a :class:`ConfigError` naming ``key``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}={str(path)!r}: no such checkpoint")
    try:  # memory-mapped: checking a large checkpoint reads its header, not its tensors
        checkpoint = load_tensors(path, key, mmap=True)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    if not isinstance(checkpoint, dict) or not {"state_dict", "hyper_parameters"} <= set(
        checkpoint
    ):
        raise ConfigError(f"{key}={str(path)!r}: not a checkpoint of this project's classifier")
    return checkpoint


def load_classifier(path: str | Path, key: str = "ckpt_path") -> Classifier:
    """The classifier of a checkpoint, on the CPU. Its weights come from the checkpoint alone:
    the ``weights``/``weights_path`` it was first built from are not read again (they may not
    exist on this machine, and a download or an unchecked file has no place here)."""
    checkpoint = read_checkpoint(path, key)
    hparams = {**checkpoint["hyper_parameters"], "weights": None, "weights_path": None}
    try:
        model = Classifier(**hparams)
        model.load_state_dict(checkpoint["state_dict"])
        model.on_load_checkpoint(checkpoint)  # temperature, place prior, out-of-set rule
    except (TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(
            f"{key}={str(path)!r}: does not fit this project's classifier: {e}"
        ) from e
    return model


def checked_spec(model: Classifier, preprocess: Mapping[str, Any]) -> InputSpec:
    """The checkpoint's input spec with a command's explicit ``preprocess.*`` changes; a bad
    change is a :class:`ConfigError` naming its key."""
    try:
        return resolve_spec(model.input_spec, dict(preprocess))
    except ValueError as e:
        raise ConfigError(str(e)) from e


def update_checkpoint(path: str | Path, **entries: Any) -> dict[str, Any]:
    """Add top-level ``entries`` (plain values) to a checkpoint file, rewritten atomically;
    returns the updated checkpoint."""
    path = Path(path)
    checkpoint = {**read_checkpoint(path), **entries}  # the mmap'd file is not written in place
    tmp = path.with_name(f".{path.name}.part")
    torch.save(checkpoint, tmp)
    tmp.replace(path)
    return checkpoint


def write_temperature(path: str | Path, temperature: float) -> None:
    """Store a fitted softmax temperature in a checkpoint file (rewritten atomically)."""
    update_checkpoint(path, temperature=checked_temperature(temperature))
