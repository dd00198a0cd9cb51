"""What a checkpoint carries so that whoever holds it alone can use it the way it was trained
(like timm's ``pretrained_cfg``): how its inputs are made (an
:class:`~inat_lightning.data.spec.InputSpec`, the data module's) and a fingerprint of the data
it learned from. Class names, lineages and the softmax temperature live
in the checkpoint too (see :class:`~inat_lightning.models.classifier.Classifier`).

A command may change the input spec only explicitly (``preprocess.image_size=…``), with a
warning; a ``data.*`` value that contradicts it is an error naming the key."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from inat_lightning.data.spec import OVERRIDABLE, InputSpec

#: a data config key's name in run folders saved before it took the input spec's name
RENAMED = {"eval_crop_ratio": "crop_ratio"}


def resolve_spec(spec: InputSpec | None, changes: Mapping[str, Any]) -> InputSpec:
    """The input spec a command uses: the checkpoint's, with the explicit ``preprocess.*``
    ``changes`` (warned). A checkpoint made before input specs needs both values given."""
    if spec is not None:
        return spec.overridden(changes)
    missing = [k for k in OVERRIDABLE if changes.get(k) is None]
    if missing:
        raise ValueError(
            f"preprocess.{missing[0]}: the checkpoint does not say how its inputs were made (made "
            "before input specs): give preprocess.image_size and preprocess.crop_ratio"
        )
    return InputSpec(image_size=changes["image_size"], crop_ratio=changes["crop_ratio"])


def pin_input_spec(
    data: MutableMapping[str, Any], spec: InputSpec, changed: Mapping[str, Any]
) -> None:
    """Set a data config's preprocessing keys (``image_size``, ``crop_ratio``: the spec's own
    names) to ``spec``'s. A value the command itself set (``changed``: its ``data.*`` keys) that
    contradicts the spec is a ``ValueError`` naming the key (``preprocess.*`` changes the spec
    explicitly). A restored run folder's config under an older key name takes the new one."""
    for old in RENAMED:
        data.pop(old, None)
    for name in OVERRIDABLE:
        wanted = getattr(spec, name)
        if name in changed and changed[name] != wanted:
            raise ValueError(
                f"data.{name}={changed[name]}: contradicts the checkpoint's input spec "
                f"({name}={wanted}); to use another preprocessing say "
                f"preprocess.{name}={changed[name]}"
            )
        data[name] = wanted
