"""Reading checkpoints and weight files that may come from someone else: tensors and plain
values only (``torch.load(weights_only=True)``: nothing in the file can run code), with errors
that name the config key instead of a raw unpickling or zip error."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from inat_lightning.config import ConfigError
from inat_lightning.data.spec import InputSpec
from inat_lightning.models.backbones import checked_state_dict, load_tensors
from inat_lightning.models.card import check_card_inputs
from inat_lightning.models.classifier import (
    Classifier,
    check_classes,
    checked_temperature,
    stored_extras,
)
from inat_lightning.models.spec import resolve_spec

#: the classification head's weight in a classifier's state dict: one row per class
HEAD = "net.fc.weight"
#: what a check of a checkpoint's values may raise for a file that does not hold what it must
UNFIT = (TypeError, ValueError, RuntimeError)


def read_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """A Lightning checkpoint of this project as a dict, every value this project stores in it
    checked (:func:`check_stored`) before any photo is read; a missing, truncated, foreign,
    code-carrying or tampered file is a :class:`ConfigError` naming ``key``, in one line."""
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
    try:
        check_stored(checkpoint)
    except UNFIT as e:
        raise ConfigError(f"{key}={str(path)!r}: {one_line(e)}") from e
    return checkpoint


def check_stored(checkpoint: Mapping[str, Any]) -> None:
    """Every value this project stores in a checkpoint, in range and consistent with the others
    (the file may come from anyone): tensors under text names, the classes (as many as the
    head's outputs, names and lineages), the input spec, the temperature, place prior,
    out-of-set rule and what the model card formats; a ``ValueError`` naming the part."""
    state = checked_state_dict(checkpoint["state_dict"], "state_dict")
    hp = checkpoint["hyper_parameters"]
    if not isinstance(hp, Mapping) or not all(isinstance(k, str) for k in hp):
        raise ValueError("hyper_parameters: not a mapping of names to values")
    k = hp.get("num_classes")
    check_classes(k, hp.get("class_names"), hp.get("lineages"))
    check_backbone_entry(hp.get("backbone", "resnet"), hp.get("backbone_args"))
    head = state.get(HEAD)
    if head is None or head.ndim != 2 or head.shape[0] != k:
        shape = None if head is None else tuple(head.shape)
        raise ValueError(f"state_dict: {HEAD} has shape {shape}, not one row per class ({k})")
    if hp.get("input_spec") is not None:
        InputSpec.from_dict(hp["input_spec"], "input_spec")
    stored_extras(checkpoint, k)
    check_card_inputs(hp.get("data_fingerprint"), checkpoint.get("results"))


def check_backbone_entry(name: Any, args: Any) -> None:
    """A checkpoint's backbone: a name (looked up in the registry when it loads) and plain
    settings, or a ``ValueError`` naming the part."""
    if not isinstance(name, str):
        raise ValueError(f"hyper_parameters.backbone={name!r:.80}: not a name")
    plain = (int, float, str, bool, type(None))
    if args is not None and not (
        isinstance(args, Mapping)
        and all(isinstance(a, str) and isinstance(v, plain) for a, v in args.items())
    ):
        raise ValueError("hyper_parameters.backbone_args: not a mapping of names to plain values")


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
    except UNFIT as e:
        raise ConfigError(
            f"{key}={str(path)!r}: does not fit this project's classifier: {one_line(e)}"
        ) from e
    return model


def one_line(error: Exception) -> str:
    """An error's message on one line (``load_state_dict`` lists its mismatches on several)."""
    return " ".join(str(error).split())


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
